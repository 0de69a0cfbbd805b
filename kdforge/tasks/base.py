"""What a task gives the trainer: batch format, criterion and metrics.

A task is registered in :data:`kdforge.registry.TASKS` and built with no arguments or keyword
arguments from the config. The trainer drives classification, segmentation and detection alike::

    inputs, targets = task.batch_to(batch, device)
    out, kd = distiller(inputs, **task.loss_context(targets, batch))
    loss = task.criterion(out, targets) * ce_weight + kd
    meter = task.metrics(); meter.update(out, targets); meter.compute() -> {"top1": ...}
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class Meter(Protocol):
    def update(self, outputs: Any, targets: Any) -> None: ...
    def compute(self) -> dict[str, float]: ...
    def state(self) -> Tensor:
        """Sufficient statistics as one float64 tensor, summable across ranks (DDP reduction)."""
        ...
    def load_state(self, state: Tensor) -> None: ...


class Task(Protocol):
    #: metric the trainer uses to pick the best checkpoint (higher is better)
    main_metric: str

    def batch_to(self, batch: Any, device: torch.device) -> tuple[Any, Any]: ...
    def criterion(self, outputs: Any, targets: Any) -> Tensor: ...
    def metrics(self) -> Meter: ...
    def loss_context(self, targets: Any, batch: Any) -> dict[str, Any]:
        """Keyword context for distillation losses (``labels``, ``index``, ``boxes``, …)."""
        ...
