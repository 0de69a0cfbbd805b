"""Per-iteration learning-rate schedules with linear warm-up, as ``LambdaLR`` factors.

Schedules are registered in :data:`kdforge.SCHEDULES` (``cosine``, ``step``, ``onecycle``, ``none``)
as builders ``(total_steps, steps_per_epoch, base_lr, **kwargs) -> factor(step)``; their keyword
parameters are what ``train.schedule`` may set.

:class:`LRFactor` is a plain callable object holding only numbers, so ``LambdaLR.state_dict()``
saves it and a resumed run continues the exact schedule.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..registry import SCHEDULES


class LRFactor:
    """``lr(step) = base_lr * factor(step)`` for ``step`` = optimiser steps taken so far (0-based).

    * warm-up (step/cosine/none): ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps;
    * ``step``: ``gamma ** (number of milestone epochs reached)``;
    * ``cosine``: from 1 down to ``min_factor`` over the steps after warm-up;
    * ``onecycle``: linear rise from ``1 / div_factor`` to 1 over ``pct_start`` of training, then
      cosine down to ``min_factor``;
    * ``none``: 1.
    """

    def __init__(self, name: str, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0,
                 milestones: list[int] | None = None, gamma: float = 0.1, min_factor: float = 0.0,
                 pct_start: float = 0.3, div_factor: float = 25.0) -> None:
        if name not in ("step", "cosine", "onecycle", "none"):
            raise ValueError(f"unknown schedule {name!r}; use step, cosine, onecycle or none")
        self.name, self.total_steps, self.steps_per_epoch = name, max(1, total_steps), max(1, steps_per_epoch)
        self.warmup_steps, self.milestones, self.gamma = warmup_steps, sorted(milestones or []), gamma
        self.min_factor, self.pct_start, self.div_factor = min_factor, pct_start, div_factor

    def __call__(self, step: int) -> float:
        if self.name == "onecycle":
            up = max(1, int(self.pct_start * self.total_steps))
            if step < up:
                return 1.0 / self.div_factor + (1.0 - 1.0 / self.div_factor) * step / up
            return self._cos((step - up) / max(1, self.total_steps - up))
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.name == "step":
            epoch = step // self.steps_per_epoch
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.name == "cosine":
            return self._cos((step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return 1.0

    def _cos(self, t: float) -> float:
        t = min(1.0, max(0.0, t))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _warmup(warmup_epochs: float, steps_per_epoch: int) -> int:
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    return int(round(warmup_epochs * steps_per_epoch))


@SCHEDULES.register("cosine")
def cosine(total_steps: int, steps_per_epoch: int, base_lr: float, warmup_epochs: float = 0.0,
           min_lr: float = 0.0) -> LRFactor:
    """Cosine decay from lr to ``min_lr`` after ``warmup_epochs`` of linear warm-up."""
    return LRFactor("cosine", total_steps, steps_per_epoch, _warmup(warmup_epochs, steps_per_epoch),
                    min_factor=min_lr / base_lr)


@SCHEDULES.register("step")
def step_decay(total_steps: int, steps_per_epoch: int, base_lr: float, milestones: list[int] | None = None,
         gamma: float = 0.1, warmup_epochs: float = 0.0) -> LRFactor:
    """lr × ``gamma`` from each epoch in ``milestones`` on (0-based: ``[150, 180, 210]`` decays before
    the 151st, 181st and 211th epoch, as mdistiller's ``LR_DECAY_STAGES``), after ``warmup_epochs`` of
    linear warm-up. A milestone listed twice decays twice (as ``torch.optim.lr_scheduler.MultiStepLR``)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    bad = [m for m in (milestones or []) if isinstance(m, bool) or not isinstance(m, int) or m < 1]
    if bad:
        raise ValueError(f"step: milestones are epoch numbers (integers >= 1) at which the lr is multiplied by "
                         f"gamma, got {bad} in {milestones}")
    return LRFactor("step", total_steps, steps_per_epoch, _warmup(warmup_epochs, steps_per_epoch),
                    milestones=list(milestones or []), gamma=gamma)


@SCHEDULES.register("onecycle")
def onecycle(total_steps: int, steps_per_epoch: int, base_lr: float, pct_start: float = 0.3,
             div_factor: float = 25.0, min_lr: float = 0.0) -> LRFactor:
    """One-cycle: linear rise from lr/``div_factor`` over ``pct_start`` of training, then cosine to ``min_lr``."""
    if not 0 < pct_start < 1 or div_factor < 1:
        raise ValueError(f"onecycle needs 0 < pct_start < 1 and div_factor >= 1, got {pct_start}, {div_factor}")
    return LRFactor("onecycle", total_steps, steps_per_epoch, 0, min_factor=min_lr / base_lr, pct_start=pct_start,
                    div_factor=div_factor)


@SCHEDULES.register("none")
def constant(total_steps: int, steps_per_epoch: int, base_lr: float, warmup_epochs: float = 0.0) -> LRFactor:
    """Constant lr (after ``warmup_epochs`` of linear warm-up)."""
    return LRFactor("none", total_steps, steps_per_epoch, _warmup(warmup_epochs, steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, kwargs: dict[str, Any], epochs: int,
                    steps_per_epoch: int) -> LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step, from the schedule registered as ``name``."""
    base_lr = float(optimizer.param_groups[0]["lr"])
    fn = SCHEDULES.build(name, epochs * steps_per_epoch, steps_per_epoch, base_lr, **kwargs)
    return LambdaLR(optimizer, fn)


def check_schedule(name: str, kwargs: dict[str, Any]) -> None:
    """Validate a schedule's name, keywords and values (by building it for a 10-step run at lr 0.1)."""
    SCHEDULES.check_args(name, kwargs)
    SCHEDULES.get(name)(10, 1, 0.1, **kwargs)
