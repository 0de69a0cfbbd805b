"""Divergence guard: stop a run whose loss is NaN/inf or explodes, naming where it happened and why.

Cost. The training loop already stacks the step's losses (total, task, KD, one per job) into one
device tensor for the epoch means; the guard adds one ``isfinite`` over that small vector and over
the input batch. On CPU the check is a plain comparison every step (no device to wait for). On CUDA
the first non-finite step and which of the values were non-finite are recorded *on the device*
and read at the steps where the loop already synchronises (log steps, end of epoch), so no extra
host sync is added; the error still names the step where the non-finite value first appeared.

Explosion. At every synchronised loss (log steps and the epoch mean) the loss is compared with the
first loss this process logged (a resumed run starts a new reference); above ``train.divergence_factor`` × that reference the run stops with
advice on the learning rate. The trainer also refuses to write ``best.pt``/``last.pt`` from
weights that are not finite, so a diverged model is never saved as a checkpoint.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from .loop import TrainingError


def _finite_inputs(inputs: Any) -> Tensor | None:
    """``isfinite(...).all()`` over the floating-point tensors of a batch (``None`` if it has none)."""
    flags = []
    stack = [inputs]
    while stack:
        x = stack.pop()
        if isinstance(x, Tensor):
            if x.is_floating_point():
                flags.append(torch.isfinite(x).all())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
    if not flags:
        return None
    return torch.stack(flags).all() if len(flags) > 1 else flags[0]


class DivergenceGuard:
    """Per-step checks of the loss parts ``[total, task, kd, job…]`` (see the module docstring)."""

    def __init__(self, part_names: Sequence[str], device: torch.device, lr: float, factor: float | None,
                 reference: float | None = None) -> None:
        self.names = list(part_names) + ["input batch"]
        self.device, self.lr, self.factor = device, lr, factor
        self.reference = reference  # the first logged loss of the run
        self.sync_each_step = device.type != "cuda"
        self._bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._bad_mask = torch.zeros(len(self.names), dtype=torch.bool, device=device)
        self.where = ""

    # ------------------------------------------------------------------ per step
    def observe(self, parts: Tensor, inputs: Any, step: int, where: str, diagnose: Any = None) -> None:
        """``parts``: the step's stacked losses (float64 vector); ``step``: 1-based index in the epoch."""
        flag = _finite_inputs(inputs)
        ok = torch.isfinite(parts)
        ok = torch.cat([ok, (flag if flag is not None else torch.ones((), dtype=torch.bool, device=ok.device))
                        .reshape(1).to(ok.device)])
        if self.sync_each_step:
            if not bool(ok.all()):
                self._raise(step, where, ok.cpu(), diagnose)
            return
        first = (self._bad_step < 0) & ~ok.all()
        self._bad_step = torch.where(first, torch.as_tensor(step, device=ok.device), self._bad_step)
        self._bad_mask = torch.where(first, ~ok, self._bad_mask)
        self.where = self.where or where

    def check_synced(self, loss: float, step: int, where: str) -> None:
        """At a step where the loss was read on the host anyway: recorded non-finite steps, explosion."""
        if not self.sync_each_step:
            bad = int(self._bad_step)
            if bad >= 0:
                self._raise(bad, f"{where.rsplit(',', 1)[0]}, step {bad} (detected at step {step})",
                            (~self._bad_mask).cpu(), None)
        if not math.isfinite(loss):
            self._raise(step, where, None, None)
        if self.reference is None:
            self.reference = abs(loss) if loss != 0 else None
            return
        if self.factor is not None and abs(loss) > self.factor * self.reference:
            raise TrainingError(
                f"the training loss exploded at {where}: {loss:.4g}, more than train.divergence_factor="
                f"{self.factor:g} × the first logged loss {self.reference:.4g}. The learning rate is too high for "
                f"this run: lower train.optimizer.lr (now {self.lr:g}, try {self.lr / 10:g}), add warm-up "
                f"(train.schedule.warmup_epochs) or set train.grad_clip. Nothing was saved from the diverged weights.")

    # ------------------------------------------------------------------ report
    def _raise(self, step: int, where: str, ok: Tensor | None, diagnose: Any) -> None:
        sources = []
        if ok is not None:
            bad = [n for n, good in zip(self.names, ok.tolist()) if not good]
            if "input batch" in bad:
                sources.append("the input batch itself holds NaN/inf: check the dataset and its transforms")
            jobs = [n for n in bad if n.startswith("job ")]
            if "task loss" in bad:
                sources.append("the task loss (student output vs targets)")
            for j in jobs:
                sources.append(f"distillation {j}")
        if diagnose is not None and not any(s.startswith("the input batch") for s in sources):
            sources += diagnose()
        cause = "; ".join(sources) if sources else "the total loss"
        raise TrainingError(
            f"the loss became NaN/inf at {where} (source: {cause}). Lower train.optimizer.lr (now {self.lr:g}), "
            f"set train.grad_clip, or use train.amp.dtype=bf16; nothing was saved from the diverged weights.")


def weights_finite(params: Sequence[Tensor]) -> bool:
    """True if every parameter is finite (one host sync; called once per epoch before saving)."""
    flags = [torch.isfinite(p.detach()).all() for p in params if p.numel()]
    return bool(torch.stack(flags).all()) if flags else True
