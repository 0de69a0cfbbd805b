"""Shared pieces of the trainer adapters: how a batch calls the Distiller, the task loss, saving the student.

``distill_forward(distiller, batch)`` accepts the two batch shapes trainers produce:

* a mapping (Hugging Face): ``labels`` goes to the losses as context, every other key is a model
  input — passed as keywords to a Distiller that routes keyword model inputs (one with
  ``split_inputs``), else one key (``pixel_values``, ``input_ids`` without a mask) positionally; several
  keys without keyword routing are an error;
* a tuple/list ``(inputs, labels, *rest)`` (Lightning, plain loaders): ``distiller(inputs, labels=labels)``.

It returns ``(student output, distillation loss, labels)``. ``output_logits`` takes the logits out of a
tensor, a ``ModelOutput``/object with ``.logits``, a dict with ``"logits"``, or a tuple (element 0).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distiller import Distiller

TaskLoss = Callable[[Tensor, Tensor], Tensor]


def distill_forward(distiller: Distiller, batch: Any) -> tuple[Any, Tensor, Any]:
    """``(student output, weighted distillation loss, labels)`` for one batch (see module docs)."""
    if isinstance(batch, Mapping):
        labels = batch.get("labels", batch.get("label"))
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        if not inputs:
            raise ValueError(f"the batch has no model inputs besides labels (keys: {sorted(batch)})")
        ctx = {} if labels is None else {"labels": labels}
        routed = getattr(distiller, "model_inputs", None)
        if routed is not None and (len(inputs) > 1 or routed.intersection(inputs)):
            out, kd = distiller(**inputs, **ctx)  # keyword model inputs, routed by the Distiller
        elif len(inputs) == 1:
            out, kd = distiller(next(iter(inputs.values())), **ctx)
        else:
            raise ValueError(f"the batch has several model inputs {sorted(inputs)}; this Distiller passes only "
                             f"positional inputs to the models, so give the batch one input key (e.g. drop "
                             f"attention_mask for unpadded batches) or use a kdforge with keyword model inputs")
        return out, kd, labels
    if isinstance(batch, (tuple, list)) and batch:
        labels = batch[1] if len(batch) > 1 else None
        out, kd = distiller(batch[0], **({} if labels is None else {"labels": labels}))
        return out, kd, labels
    out, kd = distiller(batch)
    return out, kd, None


def has_lazy_parameters(module: nn.Module) -> bool:
    """True while a lazily-shaped connector or loss has not yet seen a batch (its parameters do not exist)."""
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())


def materialize(distiller: Distiller, batch: Any) -> None:
    """One forward of ``batch`` in eval mode without gradients, so lazy connectors get their parameters
    before an optimizer is built from ``distiller.learnable_parameters()``; ``step`` does not advance."""
    if not has_lazy_parameters(distiller):
        return
    was = distiller.training
    distiller.eval()
    try:
        with torch.no_grad():
            distill_forward(distiller, batch)
    finally:
        distiller.train(was)


def output_logits(out: Any) -> Tensor:
    """The logits tensor inside a model output (tensor, ``.logits``, ``["logits"]`` or element 0)."""
    if isinstance(out, Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, Tensor):
        return out.logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot find logits in a {type(out).__name__}; pass task_loss=fn(output, labels) that handles it")


def cross_entropy(out: Any, labels: Tensor) -> Tensor:
    """Default task loss: cross-entropy of the output's logits (``(N, C)``, or ``(N, L, C)`` per token with
    ``-100`` ignored) against ``labels``."""
    logits = output_logits(out)
    if logits.dim() > 2:
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=-100)
    return F.cross_entropy(logits, labels)


def save_student(student: nn.Module, path: str | Path) -> Path:
    """Save the plain student (no teachers, no connectors), atomically.

    A Hugging Face ``PreTrainedModel`` is saved with ``save_pretrained`` into the directory ``path``
    (written to a temporary directory, then renamed); any other module's ``state_dict()`` goes to the
    file ``path`` (``torch.save`` to a temporary file, then renamed), loadable with
    ``kdforge.models.load_weights`` / ``torch.load(..., weights_only=True)``.
    """
    path = Path(path)
    if hasattr(student, "save_pretrained"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            student.save_pretrained(tmp)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
    from ..engine.checkpoint import atomic_save

    return atomic_save({k: v.detach().cpu() for k, v in student.state_dict().items()}, path)


__all__ = ["TaskLoss", "cross_entropy", "distill_forward", "has_lazy_parameters", "materialize", "output_logits",
           "save_student"]
