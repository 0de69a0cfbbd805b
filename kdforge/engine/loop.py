"""One training epoch and one evaluation pass, driven only through the Task protocol."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from ..config.run import AmpConfig
from ..tasks.base import Task
from .amp import autocast
from .distributed import DistContext, all_reduce_sum, broadcast_buffers
from .logging import Progress


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN/inf)."""


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict of keyword inputs (Hugging Face style), else ``model(inputs)``."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


def split_cached(batch: Any, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """``(batch, {"teacher_outputs": …} on device)`` for a batch from a teacher cache
    (:class:`kdforge.cache.CachedBatch`), ``(batch, {})`` otherwise."""
    from ..cache.replay import CachedBatch

    if not isinstance(batch, CachedBatch):
        return batch, {}
    nb = device.type == "cuda"
    outs = {t: {k: v.to(device, non_blocking=nb) for k, v in taps.items()} for t, taps in batch.teacher_outputs.items()}
    return batch.batch, {"teacher_outputs": outs}


def batch_len(inputs: Any, targets: Any) -> int:
    """Samples in a batch: the first dimension of the input tensor, else ``len(targets)``."""
    if isinstance(inputs, Tensor) and inputs.dim() > 0:
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], Tensor) and inputs[0].dim() == 4:
        return int(inputs[0].shape[0])
    return len(inputs) if isinstance(inputs, (list, tuple)) else len(targets)


@dataclass
class Step:
    """What a training epoch needs besides the data: the models, optimisation state and settings."""

    net: nn.Module                 # what is called: DDP(distiller) / distiller / model
    distiller: Any                 # the unwrapped Distiller, or None for plain training
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    task: Task
    amp: AmpConfig
    device: torch.device
    ce_weight: float = 1.0
    grad_clip: float | None = None
    job_names: list[str] = field(default_factory=list)
    guard: Any = None              # a DivergenceGuard (engine/guard.py), or None


def train_epoch(s: Step, loader: Iterable[Any], epoch: int, epochs: int, ctx: DistContext, log_every: int,
                show: bool) -> dict[str, float]:
    """Train one epoch; returns the (all-rank) mean losses, the lr of its last step, time and throughput."""
    s.net.train()
    sums = torch.zeros(3 + len(s.job_names), dtype=torch.float64, device=s.device)  # loss, task, kd, jobs…
    count = 0
    n_steps = len(loader)  # type: ignore[arg-type]
    progress = Progress(epoch + 1, epochs, n_steps, log_every, enabled=show)
    t0 = time.perf_counter()
    lr = float(s.optimizer.param_groups[0]["lr"])
    for i, batch in enumerate(loader):
        batch, cached = split_cached(batch, s.device)
        inputs, targets = s.task.batch_to(batch, s.device)
        with autocast(s.amp, s.device):
            if s.distiller is not None:
                out, kd = s.net(inputs, **s.task.loss_context(targets, batch), epoch=epoch, **cached)
            else:
                out, kd = call_model(s.net, inputs), None
            task_loss = s.task.criterion(out, targets)
            loss = s.ce_weight * task_loss + (kd if kd is not None else 0.0)
        parts = [loss.detach(), task_loss.detach(), kd.detach() if kd is not None else torch.zeros((), device=s.device)]
        if s.distiller is not None:
            parts += [s.distiller.losses[j] for j in s.job_names]
        stacked = torch.stack([p.to(s.device, torch.float64) for p in parts])
        if s.guard is not None:  # before backward: on CPU a bad step never reaches the weights
            s.guard.observe(stacked, inputs, i + 1, f"epoch {epoch + 1}, step {i + 1}",
                            lambda: _teacher_sources(s, inputs))
        s.optimizer.zero_grad(set_to_none=True)
        if s.scaler is not None:
            s.scaler.scale(loss).backward()
            if s.grad_clip:
                s.scaler.unscale_(s.optimizer)
                torch.nn.utils.clip_grad_norm_(s.params, s.grad_clip)
            s.scaler.step(s.optimizer)
            s.scaler.update()
        else:
            loss.backward()
            if s.grad_clip:
                torch.nn.utils.clip_grad_norm_(s.params, s.grad_clip)
            s.optimizer.step()
        lr = float(s.optimizer.param_groups[0]["lr"])  # the lr this step used
        s.scheduler.step()
        n = batch_len(inputs, targets)
        count += n
        sums += stacked * n
        if (i + 1) % log_every == 0 or i + 1 == n_steps:
            value = float(loss.detach())
            if s.guard is not None:
                s.guard.check_synced(value, i + 1, f"epoch {epoch + 1}, step {i + 1}")
            elif not math.isfinite(value):
                raise TrainingError(f"the loss is {value} at epoch {epoch + 1}, step {i + 1}; lower "
                                    f"train.optimizer.lr, set train.grad_clip, or use train.amp.dtype=bf16")
            progress.update(i + 1, count, {"loss": value})
        else:
            progress.update(i + 1, count, None)
    progress.close()
    elapsed = time.perf_counter() - t0
    total = all_reduce_sum(torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=s.device)]), ctx)
    count_all = max(1.0, float(total[-1]))
    means = (total[:-1] / count_all).tolist()
    row = {"lr": lr, "train_loss": means[0], "task_loss": means[1]}
    if s.distiller is not None:
        row["kd_loss"] = means[2]
        row.update({f"loss_{j}": v for j, v in zip(s.job_names, means[3:])})
    row.update({"epoch_time": elapsed, "throughput": count_all / max(elapsed, 1e-9)})
    return row


def _teacher_sources(s: Step, inputs: Any) -> list[str]:
    """Which teacher outputs/taps are non-finite on ``inputs`` (run only when a step's loss is)."""
    d = s.distiller
    if d is None:
        return []
    try:
        with torch.no_grad(), autocast(s.amp, s.device):
            args, model_kw, _ = d.split_inputs(inputs if isinstance(inputs, tuple) else (inputs,), {})
            recs, logits = d._run_teachers(args, model_kw, {})
            values = {n: {**(dict(r) if isinstance(r, dict) else r.values()), "": logits.get(n)} for n, r in recs.items()}
    except Exception:  # a diagnosis must not hide the original problem
        return []
    out = []
    for name, taps in values.items():
        bad = [tap or "(output)" for tap, t in taps.items()
               if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            out.append(f"teacher {name!r} output/taps {bad} are NaN/inf (check its weights and dtype)")
    return out


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], task: Task, device: torch.device, amp: AmpConfig,
             ctx: DistContext | None = None) -> dict[str, float]:
    """The task's metrics of ``model`` over ``loader`` (summed over ranks under DDP)."""
    ctx = ctx or DistContext(device=device)
    broadcast_buffers(model, ctx)
    was = model.training
    model.eval()
    meter = task.metrics()
    try:
        for batch in loader:
            inputs, targets = task.batch_to(batch, device)
            with autocast(amp, device):
                out = call_model(model, inputs)
            meter.update(out, targets)
    finally:
        model.train(was)
    if ctx.distributed:
        meter.load_state(all_reduce_sum(meter.state().to(device), ctx).cpu())
    return meter.compute()
