"""The trainer: a RunConfig → trained student, ``metrics.csv``, checkpoints and ``summary.json``.

>>> from kdforge.engine import train
>>> result = train("configs/fmnist/kd.yaml", overrides=["train.epochs=1"])
>>> result["best"]["value"]

With ``jobs`` the student trains inside a :class:`~kdforge.Distiller` (teachers frozen); without,
``model`` trains alone. Under ``torchrun`` the same code runs data-parallel (see ``distributed.py``).
"""
from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..build import build_distiller, build_model_from_spec
from ..config import ConfigError
from ..config.run import RunConfig, load_run_config
from ..data.wrappers import dataset_labels
from ..distiller import Distiller, ExternalTeacher
from ..registry import TASKS
from .amp import check_amp, make_scaler
from .checkpoint import FORMAT, VERSION, CheckpointError, atomic_save, load_module_state, preserved_rng, \
    read_checkpoint, rng_state, set_rng_state
from .data import ShardSampler, build_datasets, make_loader
from .distributed import DistContext, barrier, cleanup, init_distributed
from .guard import DivergenceGuard, weights_finite
from .logging import CSVLog, TensorBoard, say
from .loop import Step, TrainingError, evaluate, split_cached, train_epoch
from .optim import build_optimizer
from .resume import apply_new_hyperparameters, check_resume_config, hyperparameters
from .rundir import RunLock, claim_run_dir
from .schedule import build_scheduler

ConfigLike = str | Path | Mapping[str, Any] | RunConfig


def _better(task: Any, value: float, best: float) -> bool:
    """Whether ``value`` beats ``best`` for the task's main metric (``task.higher_is_better``, default True)."""
    return value < best if getattr(task, "higher_is_better", True) is False else value > best


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_teachers(cfg: RunConfig, given: Iterable[str] = ()) -> None:
    """Before any data is read: jobs have a teacher (or say ``self``), and teachers have weights unless
    ``allow_untrained_teacher``; ``given``: teachers handed over as modules."""
    given = set(given)
    if not cfg.jobs:
        return
    if not cfg.teachers and not given:  # the Distiller would refuse it, but only after the data is loaded
        bare = [j.name or f"jobs[{i}]" for i, j in enumerate(cfg.jobs) if j.teachers is None]
        if bare:
            raise ConfigError(f"jobs {bare} have no teacher: the config has no teachers and the jobs name none. "
                              f"Add teachers:, or write teachers: [self] in a job for self-distillation")
    if cfg.allow_untrained_teacher:
        return
    untrained = [n for n, spec in cfg.teachers.items() if not spec.weights and n not in given]
    if untrained:
        raise ConfigError(f"teachers {untrained} have no weights: distilling from an untrained (randomly "
                          f"initialised) teacher teaches noise. Give teachers.<name>.weights (a file written by "
                          f"training the teacher, e.g. runs/<teacher>/best.pt), or set "
                          f"allow_untrained_teacher: true for a smoke test")


class Trainer:
    """Train one run. ``model``/``teachers``/``datasets`` given here replace what the config names
    (``datasets`` = ``(train, eval)``), handy in notebooks and tests."""

    def __init__(self, cfg: ConfigLike, overrides: list[str] | None = None, *, model: nn.Module | None = None,
                 teachers: Mapping[str, nn.Module] | None = None, datasets: tuple[Dataset, Dataset] | None = None,
                 verbose: bool = True) -> None:
        given = (["student"] if model is not None else []) + list(teachers or {})
        self.cfg = load_run_config(copy.deepcopy(dict(cfg)) if isinstance(cfg, Mapping) else cfg, overrides, given)
        self._model, self._teachers, self._datasets, self.verbose = model, dict(teachers or {}), datasets, verbose
        self._config_path = cfg if isinstance(cfg, (str, Path)) else None
        self._cache: Any = None  # the TeacherCache when cfg.teacher_cache is set (kdforge.cache)
        self._cached_views: Any = None
        self.student: nn.Module | None = None
        self.distiller: Distiller | None = None
        self._prior_time = 0.0  # training seconds before a resume
        self._t_train = 0.0
        self.resume_changes: list[str] = []  # config fields a resume changed (reported, kept in config history)

    # ------------------------------------------------------------------------------ building
    def _data(self, ctx: DistContext, task: Any) -> tuple[Any, Any, Dataset]:
        cfg = self.cfg.data
        if self._datasets is not None:
            train_ds, eval_ds = self._datasets
            collate = getattr(train_ds, "collate_fn", None)
        else:
            train_ds, eval_ds, collate = build_datasets(cfg, self.cfg.seed)
        collate = collate or getattr(task, "collate_fn", None)  # e.g. detection's variable-size targets
        if cfg.batch_size % ctx.world_size:
            raise TrainingError(f"data.batch_size={cfg.batch_size} is the global batch; it must divide by the "
                                f"{ctx.world_size} processes")
        bs = cfg.batch_size // ctx.world_size
        refresh_ds, train_collate = train_ds, collate
        if self._cache is not None:  # replay cached views; teacher tensors come with the batch
            from ..cache import CachedCollate, replay_views
            train_ds = replay_views(self.cfg, self._cache, train_ds)
            self._cached_views, train_collate = train_ds, CachedCollate(collate)
            say(f"teacher cache {self.cfg.teacher_cache}: {self._cache.views} view(s) per sample, teachers "
                f"{list(self._cache.manifest['teachers'])} (not built)", self._show(ctx))
        ebs = max(1, (cfg.eval_batch_size or cfg.batch_size) // ctx.world_size)
        self._train_sampler = ShardSampler(len(train_ds), ctx.rank, ctx.world_size, True, self.cfg.seed)  # type: ignore[arg-type]
        eval_sampler = ShardSampler(len(eval_ds), ctx.rank, ctx.world_size, False, pad=False)  # type: ignore[arg-type]
        pin = ctx.device.type == "cuda"
        train_loader = make_loader(train_ds, bs, self._train_sampler, cfg.num_workers, train_collate, pin)
        eval_loader = make_loader(eval_ds, ebs, eval_sampler, cfg.num_workers, collate, pin)
        if len(train_loader) == 0:
            raise TrainingError("the training set is empty; check data.train_subset and data.root")
        self._first_batch_loader = DataLoader(train_ds, batch_size=min(bs, 8), shuffle=False, collate_fn=train_collate)
        # in order, for losses that refresh state from data before an epoch (Distiller.on_epoch_start)
        self._refresh_loader = DataLoader(refresh_ds, batch_size=bs, shuffle=False, collate_fn=collate)
        return train_loader, eval_loader, train_ds

    def _models(self, ctx: DistContext) -> nn.Module:
        cfg = self.cfg
        student = self._model if self._model is not None else build_model_from_spec(cfg.student, "student")
        self.student = student
        if not cfg.jobs:
            if cfg.teachers:
                say("note: no jobs, so the teachers are not used (plain training of `model`)", self._show(ctx))
            return student.to(ctx.device)
        teachers = dict(self._teachers)
        if self.cfg.teacher_cache:  # served from the cache: those teachers are not built
            from ..cache import open_cache
            self._cache = open_cache(cfg, self._config_path)
            teachers.update({name: ExternalTeacher(list(e["taps"]), f"teacher cache {cfg.teacher_cache!r}", e["num_params"])
                             for name, e in self._cache.manifest["teachers"].items() if name in cfg.teachers})
        self.distiller = build_distiller(cfg, student=student, teachers=teachers,
                                         warn=lambda m: say(f"warning: {m}", self._show(ctx)))
        self.distiller.to(ctx.device)  # a teacher with a device of its own (teachers.NAME.device) stays there
        for line in self.distiller.placements():
            say(line, self._show(ctx))
        return self.distiller

    def _show(self, ctx: DistContext) -> bool:
        return self.verbose and ctx.is_main

    # ------------------------------------------------------------------------------ training
    def fit(self, resume: str | Path | bool | None = None, overwrite: bool = False) -> dict[str, Any]:
        """Train (or continue training from a checkpoint) and return the run summary.

        The run directory must be empty unless ``resume`` (continue the run there) or ``overwrite``
        (delete the earlier run's files first); it is locked while the run trains (see ``rundir.py``).
        """
        cfg, tc = self.cfg, self.cfg.train
        check_teachers(cfg, self._teachers)
        ctx = init_distributed(cfg.device)
        lock: RunLock | None = None
        try:
            if ctx.is_main:
                lock = claim_run_dir(cfg.run_dir, resume=bool(resume), overwrite=overwrite)
                for note in lock.notes:
                    say(f"note: {note}", self._show(ctx))
            ckpt, path = None, None
            if resume:  # before any data or model: a checkpoint that does not fit is found in a second
                path = self._resume_path(resume)
                ckpt = read_checkpoint(path)
                self.resume_changes = check_resume_config(ckpt.get("config"), cfg.to_dict(), str(path))
            check_amp(tc.amp, ctx.device)
            seed_everything(cfg.seed)
            task = TASKS.build(cfg.task, **cfg.task_kwargs)
            net = self._models(ctx)  # before the data: weights/tap errors surface without reading a dataset
            train_loader, eval_loader, _ = self._data(ctx, task)
            if self.distiller is not None and self.distiller.needs_dataset_labels:  # CRD: negatives by class
                self.distiller.set_dataset_labels(dataset_labels(self._refresh_loader.dataset))
            with preserved_rng():
                first, cached = split_cached(next(iter(self._first_batch_loader)), ctx.device)
                inputs, targets = task.batch_to(first, ctx.device)
                if self.distiller is not None:  # materialise lazy connectors before the optimizer and DDP
                    self.distiller.dry_run(inputs, **task.loss_context(targets, first), epoch=0, **cached)
            params = self.distiller.learnable_parameters() if self.distiller is not None else \
                [p for p in net.parameters() if p.requires_grad]
            optimizer = build_optimizer(tc.optimizer.name, tc.optimizer.kwargs, params)
            scheduler = build_scheduler(optimizer, tc.schedule.name, tc.schedule.kwargs, tc.epochs, len(train_loader))
            scaler = make_scaler(tc.amp, ctx.device)
            start, best, resumed_from = 0, None, None
            if ckpt is not None and path is not None:
                start, best = self._restore(path, ckpt, net, optimizer, scheduler, scaler)
                resumed_from = str(path)
                say(f"resumed from {path} after epoch {start}", self._show(ctx))
                for change in self.resume_changes:
                    say(f"  resume changes {change}", self._show(ctx))
            wrapped: nn.Module = net
            if ctx.distributed:
                wrapped = nn.parallel.DistributedDataParallel(
                    net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
            job_names = [j.name for j in self.distiller.jobs] if self.distiller else []
            parts = ["total loss", "task loss", "distillation loss"] + [f"job {j!r}" for j in job_names]
            guard = DivergenceGuard(parts, ctx.device, float(optimizer.defaults.get("lr", 0.0)), tc.divergence_factor)
            step = Step(wrapped, self.distiller, params, optimizer, scheduler, scaler, task, tc.amp, ctx.device,
                        tc.ce_weight, tc.grad_clip, job_names, guard)
            if ctx.is_main and resumed_from and cfg.checkpoint.every and start % cfg.checkpoint.every == 0 and start \
                    and not (cfg.run_dir / f"epoch_{start:03d}.pt").is_file():
                # that epoch's checkpoint was interrupted mid-write: the restored state is exactly it
                atomic_save(self._state(net, step, start, best), cfg.run_dir / f"epoch_{start:03d}.pt")
                say(f"note: rewrote epoch_{start:03d}.pt, whose write had been interrupted", self._show(ctx))
            return self._loop(ctx, step, net, train_loader, eval_loader, start, best, resumed_from, inputs)
        finally:
            if lock is not None:
                lock.release()
            cleanup(ctx)

    def _loop(self, ctx: DistContext, step: Step, net: nn.Module, train_loader: DataLoader,
              eval_loader: DataLoader, start: int, best: dict[str, Any] | None, resumed_from: str | None,
              sample: Any) -> dict[str, Any]:
        cfg, tc, task = self.cfg, self.cfg.train, step.task
        run_dir, show = cfg.run_dir, self._show(ctx)
        assert self.student is not None
        if ctx.is_main:
            self._write_config(run_dir, resumed_from)
        log = CSVLog(run_dir / "metrics.csv", resume_epoch=start if resumed_from else None) if ctx.is_main else None
        tb = TensorBoard(run_dir / "tb", enabled=ctx.is_main)
        metrics: dict[str, float] = {}
        t_train = self._prior_time
        for epoch in range(start, tc.epochs):
            if self.distiller is not None:
                with preserved_rng():  # a refresh pass must not shift the run's random stream
                    self.distiller.on_epoch_start(epoch, self._refresh_loader)
            self._train_sampler.set_epoch(epoch)
            if self._cached_views is not None:
                self._cached_views.set_epoch(epoch)  # which cached view each sample replays
            train_loader.generator.manual_seed(cfg.seed * 100_003 + epoch)  # worker seeds per epoch
            row: dict[str, Any] = {"epoch": epoch + 1}
            row.update(train_epoch(step, train_loader, epoch, tc.epochs, ctx, tc.log_every, show))
            t_train += row["epoch_time"]
            self._t_train = t_train
            if not weights_finite(step.params):  # never evaluate or save diverged weights
                lr = step.optimizer.defaults.get("lr", 0.0)
                raise TrainingError(f"the weights became NaN/inf during epoch {epoch + 1} (the loss stayed finite at "
                                    f"the logged steps); lower train.optimizer.lr (now {lr:g}) or set "
                                    f"train.grad_clip. Nothing was saved from this epoch.")
            if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
                metrics = evaluate(self.student, eval_loader, task, ctx.device, tc.amp, ctx)
                row.update({f"eval_{k}": v for k, v in metrics.items()})
                value = metrics.get(task.main_metric)
                if value is not None and (best is None or _better(task, value, best["value"])):
                    best = {"metric": task.main_metric, "value": value, "epoch": epoch + 1}
                    if ctx.is_main and cfg.checkpoint.keep_best:
                        atomic_save(self._state(net, step, epoch + 1, best), run_dir / "best.pt")
            if ctx.is_main:
                assert log is not None
                log.write(row)
                tb.scalars({k: v for k, v in row.items() if k != "epoch"}, epoch + 1)
                ckpt = self._state(net, step, epoch + 1, best)
                if cfg.checkpoint.keep_last:
                    atomic_save(ckpt, run_dir / "last.pt")
                if cfg.checkpoint.every and (epoch + 1) % cfg.checkpoint.every == 0:
                    atomic_save(ckpt, run_dir / f"epoch_{epoch + 1:03d}.pt")
            shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "lr")
            say(f"epoch {epoch + 1}/{tc.epochs} lr={row['lr']:.4g} {shown}", show)
            barrier(ctx)
        tb.close()
        if not metrics:  # resumed a finished run: evaluate the final weights once
            metrics = evaluate(self.student, eval_loader, task, ctx.device, tc.amp, ctx)
        summary = self._summary(ctx, task.main_metric, best, metrics, t_train, sample, resumed_from)
        if ctx.is_main:
            tmp = run_dir / ".summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            tmp.replace(run_dir / "summary.json")
        barrier(ctx)
        return summary

    def _write_config(self, run_dir: Path, resumed_from: str | None) -> None:
        """``config.yaml`` holds the config the run started with; each resume adds ``config.resume-N.yaml``
        (the config it ran with, its changes listed at the top) instead of rewriting it."""
        text = yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)
        first = run_dir / "config.yaml"
        if not resumed_from or not first.is_file():
            first.write_text(text)
            return
        n = 1
        while (run_dir / f"config.resume-{n}.yaml").exists():
            n += 1
        head = f"# resume {n} from {resumed_from}\n"
        head += "".join(f"# changed {c}\n" for c in self.resume_changes) or "# no config changes\n"
        (run_dir / f"config.resume-{n}.yaml").write_text(head + text)

    # ------------------------------------------------------------------------------ state
    def _state(self, net: nn.Module, step: Step, epoch: int, best: dict[str, Any] | None) -> dict[str, Any]:
        assert self.student is not None
        return {"format": FORMAT, "version": VERSION, "epoch": epoch,
                "global_step": int(step.scheduler.last_epoch),
                "student": self.student.state_dict(), "state": net.state_dict(),
                "kind": "distiller" if self.distiller is not None else "model",
                "optimizer": step.optimizer.state_dict(), "scheduler": step.scheduler.state_dict(),
                "scaler": step.scaler.state_dict() if step.scaler is not None else None,
                "rng": rng_state(), "best": best, "train_time_s": float(self._t_train),
                "config": self.cfg.to_dict()}

    def _resume_path(self, resume: str | Path | bool) -> Path:
        if resume is True or resume == "auto":
            return self.cfg.run_dir / "last.pt"
        p = Path(resume)  # type: ignore[arg-type]
        return p / "last.pt" if p.is_dir() else p

    def _restore(self, path: Path, ckpt: dict[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, scaler: Any) -> tuple[int, dict[str, Any] | None]:
        kind = "distiller" if self.distiller is not None else "model"
        if ckpt.get("kind") != kind:
            raise CheckpointError(f"{path} was written by a {'distillation' if ckpt.get('kind') == 'distiller' else 'plain'}"
                                  f" run, but this run is {'distillation (jobs)' if kind == 'distiller' else 'plain training'};"
                                  f" resume with the config that wrote it")
        old_cfg = ckpt.get("config") or {}
        old = (old_cfg.get("student") or old_cfg.get("model") or {}).get("name")
        if old is not None and self._model is None and old != self.cfg.model.name:
            raise CheckpointError(f"{path} was written for model {old!r}, but this run's model is "
                                  f"{self.cfg.model.name!r}; resume with the config that wrote it")
        load_module_state(net, ckpt["state"], path, "model" if kind == "model" else "distiller (student, connectors, losses)")
        fresh = ([dict(fn.__dict__) for fn in scheduler.lr_lambdas], list(scheduler.base_lrs), hyperparameters(optimizer))
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            apply_new_hyperparameters(optimizer, scheduler, *fresh)  # this config's epochs, lr, schedule
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({e}); resume with "
                                  f"the config that wrote it") from None
        set_rng_state(ckpt["rng"])
        self._prior_time = float(ckpt.get("train_time_s", 0.0))
        return int(ckpt["epoch"]), ckpt.get("best")

    def _summary(self, ctx: DistContext, main_metric: str, best: dict[str, Any] | None, metrics: dict[str, float], t_train: float,
                 sample: Any, resumed_from: str | None) -> dict[str, Any]:
        from ..models import count_macs, count_params

        assert self.student is not None
        try:
            one = sample[:1] if isinstance(sample, torch.Tensor) else \
                {k: v[:1] for k, v in sample.items()} if isinstance(sample, Mapping) else sample
            macs: int | None = count_macs(self.student, one)
        except Exception:  # exotic inputs: report no MACs rather than fail a finished run
            macs = None
        teachers = self.distiller.teachers if self.distiller is not None else {}
        return {"name": self.cfg.name, "task": self.cfg.task, "run_dir": str(self.cfg.run_dir),
                "model": self.cfg.model.name, "params": count_params(self.student), "macs": macs,
                "teachers": {n: {"params": getattr(t, "num_params", None) or count_params(t)} for n, t in teachers.items()},
                "teacher_cache": self.cfg.teacher_cache if self._cache is not None else None,
                "jobs": [j.name for j in self.distiller.jobs] if self.distiller is not None else [],
                "main_metric": main_metric,
                "best": best, "final": metrics, "epochs": self.cfg.train.epochs, "train_time_s": t_train,
                "world_size": ctx.world_size, "device": str(ctx.device), "resumed_from": resumed_from,
                "resume_changes": list(self.resume_changes)}


def train(cfg: ConfigLike, overrides: list[str] | None = None, resume: str | Path | bool | None = None,
          overwrite: bool = False, **kwargs: Any) -> dict[str, Any]:
    """``Trainer(cfg, overrides, **kwargs).fit(resume, overwrite)``."""
    return Trainer(cfg, overrides, **kwargs).fit(resume, overwrite)
