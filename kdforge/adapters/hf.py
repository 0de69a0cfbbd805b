"""Distillation inside a Hugging Face ``transformers.Trainer``: ``DistillationTrainer``.

>>> distiller = Distiller(student, {"t0": teacher}, [DistillJob(loss={"type": "kd", "T": 4}, student="classifier",
...                                                              teacher="classifier", weight=0.9)])
>>> trainer = DistillationTrainer(distiller, args=TrainingArguments("out", ...), train_dataset=ds, ce_weight=0.1)
>>> trainer.train()
>>> trainer.save_student("out/student")          # the plain student: save_pretrained() for HF models

The Trainer's model is the Distiller, so its optimizer covers ``distiller.learnable_parameters()``
(student, connectors, loss parameters; teachers are frozen and not parameters of the Distiller) and
``model.train()``/``.to(device)`` reach the teachers the Distiller way (teachers stay in eval mode).
``compute_loss`` is ``ce_weight * task_loss(student output, labels) + distillation loss``; the task
loss defaults to cross-entropy on the output's logits (per token with ``-100`` ignored for
``(N, L, C)``). Which dataset columns reach the model is decided from the *student's* ``forward``
signature (plus ``labels``), as for a plain Trainer. The TRL-style alternative is the same
``compute_loss`` in your own Trainer subclass: call :func:`kdforge.adapters.common.distill_forward`.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch import Tensor

from ..distiller import Distiller
from .common import TaskLoss, cross_entropy, distill_forward, has_lazy_parameters, materialize, save_student

try:
    from transformers import Trainer
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError(f"kdforge.adapters.hf needs transformers: pip install kdforge[hf] ({e})") from None


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` training ``distiller``'s student (see module docs).

    ``distiller`` replaces the Trainer's ``model`` argument; every other Trainer argument is passed on.
    """

    def __init__(self, distiller: Distiller, *args: Any, ce_weight: float = 1.0, task_loss: TaskLoss | None = None,
                 **kwargs: Any) -> None:
        if "model" in kwargs:
            raise TypeError("DistillationTrainer trains distiller.student: pass the Distiller as its first argument, "
                            "not model=")
        if not isinstance(distiller, Distiller):
            raise TypeError(f"DistillationTrainer needs a kdforge Distiller, got {type(distiller).__name__}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.distiller, self.ce_weight, self.task_loss = distiller, ce_weight, task_loss or cross_entropy
        super().__init__(distiller, *args, **kwargs)
        if self.args.label_names is None:  # found from the model class by default; the Distiller's names none
            self.label_names = ["labels"]
        if has_lazy_parameters(distiller):  # lazy connectors must exist before the optimizer is built
            if self.train_dataset is None:
                raise ValueError("the Distiller has lazily-shaped connectors; pass train_dataset= (one batch of it "
                                 "shapes them) or call distiller.dry_run(example_inputs) first")
            materialize(distiller, self._prepare_inputs(next(iter(self.get_train_dataloader()))))

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:  # the Distiller's own forward(*inputs, **ctx) names no columns
            params = inspect.signature(self.distiller.student.forward).parameters
            self._signature_columns = list(params) + ["label", "label_ids", "labels"]

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Tensor | tuple[Tensor, Any]:
        out, kd, labels = distill_forward(model, inputs)
        loss = kd
        if self.ce_weight and labels is not None:
            loss = loss + self.ce_weight * self.task_loss(out, labels)
        if not return_outputs:
            return loss
        # the Trainer's prediction_step reads a dict's values (a ModelOutput is one) as the predictions
        return loss, (out if isinstance(out, dict) else {"logits": out})

    def save_student(self, path: str | Path | None = None) -> Path:
        """Save the plain student (``save_pretrained`` for HF models, else a state-dict file); default
        ``<output_dir>/student``. Written atomically."""
        return save_student(self.distiller.student, path or Path(self.args.output_dir) / "student")


__all__ = ["DistillationTrainer"]
