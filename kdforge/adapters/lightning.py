"""Distillation as a PyTorch Lightning ``LightningModule``: ``DistillationModule``.

>>> module = DistillationModule(distiller, ce_weight=0.1, optimizer=lambda params: torch.optim.SGD(params, lr=0.05))
>>> lightning.Trainer(max_epochs=10).fit(module, train_loader, val_loader)
>>> module.save_student("student.pt")        # the plain student's state dict (save_pretrained for HF models)

``training_step`` is ``ce_weight * task_loss(student output, labels) + distillation loss`` for a batch
``(inputs, labels, ...)`` or a dict batch (see :func:`kdforge.adapters.common.distill_forward`); it
logs ``train/loss``, ``train/task`` and each job's ``train/kd/<job>``. ``validation_step`` logs
``val/loss`` and, for classification logits, ``val/acc``. The optimizer covers
``distiller.learnable_parameters()`` (student + connectors + loss parameters); teachers are frozen,
stay in eval mode, and follow the module to its device. Lightning's checkpoints hold the Distiller's
state (student, connectors, step counter), never the teachers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..distiller import Distiller
from .common import (TaskLoss, cross_entropy, distill_forward, has_lazy_parameters, materialize, output_logits,
                     save_student)

try:
    import lightning as L
except ImportError:  # the older package name
    try:
        import pytorch_lightning as L  # type: ignore[no-redef]
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"kdforge.adapters.lightning needs lightning: pip install kdforge[lightning] ({e})") from None


class DistillationModule(L.LightningModule):
    """A LightningModule training ``distiller.student`` (see module docs).

    ``optimizer`` builds the optimizer from the parameter list (default SGD, lr 0.05, momentum 0.9);
    ``scheduler`` optionally builds an LR scheduler from the optimizer (stepped per epoch);
    ``example_batch`` (one training batch) shapes lazy connectors before the optimizer is built.
    """

    def __init__(self, distiller: Distiller, ce_weight: float = 1.0, task_loss: TaskLoss | None = None,
                 optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
                 scheduler: Callable[[torch.optim.Optimizer], Any] | None = None, example_batch: Any = None) -> None:
        super().__init__()
        if not isinstance(distiller, Distiller):
            raise TypeError(f"DistillationModule needs a kdforge Distiller, got {type(distiller).__name__}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.distiller, self.ce_weight = distiller, ce_weight
        self.task_loss = task_loss or cross_entropy
        self._optimizer, self._scheduler = optimizer, scheduler
        if example_batch is not None:
            materialize(distiller, example_batch)

    def forward(self, *inputs: Any) -> Any:
        """The student alone (inference)."""
        return self.distiller.student(*inputs)

    def _step(self, batch: Any, stage: str) -> Tensor:
        out, kd, labels = distill_forward(self.distiller, batch)
        task = self.task_loss(out, labels) if labels is not None and self.ce_weight else kd.new_zeros(())
        loss = self.ce_weight * task + kd
        n = len(labels) if labels is not None else None
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=n)
        self.log(f"{stage}/task", task, batch_size=n)
        if stage == "train":
            for name, value in self.distiller.losses.items():
                self.log(f"train/kd/{name}", value, batch_size=n)
        elif labels is not None:
            logits = output_logits(out)
            if logits.dim() == 2:
                self.log("val/acc", (logits.argmax(1) == labels).float().mean() * 100, prog_bar=True, batch_size=n)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        if has_lazy_parameters(self.distiller):
            raise ValueError("the Distiller has lazily-shaped connectors without parameters yet, so the optimizer "
                             "would miss them: pass example_batch=next(iter(train_loader)) to DistillationModule")
        params = self.distiller.learnable_parameters()
        opt = (self._optimizer(params) if self._optimizer is not None
               else torch.optim.SGD(params, lr=0.05, momentum=0.9))
        if self._scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": self._scheduler(opt)}

    def save_student(self, path: str | Path) -> Path:
        """Save the plain student (a state-dict file; ``save_pretrained`` directory for HF models), atomically."""
        return save_student(self.distiller.student, path)


__all__ = ["DistillationModule"]
