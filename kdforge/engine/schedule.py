"""Per-iteration learning-rate schedules with linear warm-up, as ``LambdaLR`` factors.

:class:`LRFactor` is a plain callable object holding only numbers, so ``LambdaLR.state_dict()``
saves it and a resumed run continues the exact schedule.
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config.run import ScheduleConfig


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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int,
                    base_lr: float) -> LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step."""
    fn = LRFactor(cfg.name, epochs * steps_per_epoch, steps_per_epoch,
                  warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)), milestones=cfg.milestones,
                  gamma=cfg.gamma, min_factor=cfg.min_lr / base_lr, pct_start=cfg.pct_start,
                  div_factor=cfg.div_factor)
    return LambdaLR(optimizer, fn)
