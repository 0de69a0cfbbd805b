"""The contract every distillation loss follows.

A loss is an ``nn.Module`` registered in :data:`kdforge.registry.LOSSES`, built from keyword
arguments that default to its paper's values, and called as ``loss(student, teacher, **ctx)``.

How the Distiller calls it (class attributes a loss may override):

``pairwise = True`` (default)
    called once per (student tap, teacher tap) pair with two tensors; the job sums the pairs.
``pairwise = False``
    called once with ``student: list[Tensor]`` and ``teacher: list[Tensor]`` (all taps of the job),
    for losses that relate several taps (IRG, self-distillation).
``same_shape = True``
    the Distiller checks that paired tensors have equal shapes before the call and otherwise raises
    :class:`ShapeMismatchError` suggesting a connector. Losses that compare tensors of different
    shapes (AT, SP, RKD, CRD, …) set it to ``False`` and validate what they need themselves.
``multi_teacher = False``
    when ``True`` and a job has several teachers, the loss is called once with ``teacher`` a list
    (one entry per teacher) and ``ctx["teacher_weights"]``; otherwise the job calls it once per teacher
    and averages with the teacher weights.

``teacher_via_softmax = False``
    ``True`` when the loss sees each teacher tensor only through ``softmax(t / T)`` along dim 1 (KD,
    DKD, DIST): then a teacher cache may store those logits as top-k with a renormalised tail
    (:mod:`kdforge.cache.topk`). Losses that read raw logits (``logit_std``) keep the default.
``needs_teacher_model = False``
    ``True`` when :meth:`setup` or ``on_epoch_start`` need the teacher *module* (MGD's matching pass,
    OFD's margins from the teacher's BatchNorm): such a job cannot train from a teacher cache.

``setup(student, teachers, student_taps, teacher_taps)`` (optional method)
    called once by the Distiller at construction with the student module, the job's teacher
    modules (list, in job order) and the job's tap specs, for losses that need the models
    themselves (OFD's margin from the teacher's BN statistics, MGD's matching pass).

``on_epoch_start(epoch, loader)`` (optional method)
    called by the trainer (or a user's loop, through :meth:`Distiller.on_epoch_start`) before each
    epoch, for losses that refresh state from data (MGD's channel matching every N epochs).

``set_dataset_labels(labels)`` (optional method)
    called by the trainer (or a user's loop, through :meth:`Distiller.set_dataset_labels`) once
    before training with the label of every training sample (``labels[i]`` for dataset index ``i``),
    or ``None`` when the training set exposes no ``targets`` (CRD's negatives from other classes).

``ctx`` carries what some losses need: ``labels``, ``index`` (dataset sample indices), ``step``
(training forwards done so far), ``epoch``, ``student_output``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ShapeMismatchError(ValueError):
    """Paired student/teacher tensors whose shapes a loss cannot compare."""


class LossArgumentError(ValueError):
    """A loss built with an argument value it cannot use (e.g. a temperature ``T <= 0`` or ``T: "4"``)."""


def check_temperature(value: Any, name: str, loss: str) -> Any:
    """The one temperature check every loss uses: a real number ``> 0``, returned as ``float``.

    Raises :class:`LossArgumentError` naming the loss and the argument (``kd: T must be …``); a
    numeric string (``T: "4"`` in YAML) is refused rather than guessed. Returns ``value`` unchanged.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (a string: write the number without quotes)" if isinstance(value, str) else ""
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise LossArgumentError(f"{loss}: temperature {name} must be > 0 (a number), got {shown}"
                                f" of type {type(value).__name__}{hint}")
    if not value > 0 or value != value or value == float("inf"):
        raise LossArgumentError(f"{loss}: temperature {name} must be > 0 and finite, got {value}")
    return value


class DistillLoss(nn.Module):
    """Optional base class: holds the calling-convention flags documented in this module."""

    pairwise: ClassVar[bool] = True
    same_shape: ClassVar[bool] = True
    multi_teacher: ClassVar[bool] = False
    teacher_via_softmax: ClassVar[bool] = False
    needs_teacher_model: ClassVar[bool] = False


def kl_with_temperature(student: Tensor, teacher: Tensor, T: float, dim: int = 1) -> Tensor:
    r"""``T² · KL(softmax(t/T) ‖ softmax(s/T))`` along ``dim``, not reduced over the other dimensions.

    .. math:: T^2 \sum_c p^t_c\,(\log p^t_c - \log p^s_c),\quad p = \mathrm{softmax}(z / T)

    The one KL-with-temperature of the response, dense and channel-wise losses (KD, DKD's NCKD,
    logit standardisation, BYOT, pixel-wise seg KL, CWD); each reduces the result its paper's way.
    """
    log_p_s = F.log_softmax(student / T, dim=dim)
    log_p_t = F.log_softmax(teacher / T, dim=dim)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim) * (T * T)


def suggest_connector(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> str:
    """A sentence telling the user which connector fixes a student/teacher shape mismatch."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t):
        return "flatten or pool one side, or tap a layer with the same rank"
    if s[0] != t[0]:
        return "student and teacher saw different batch sizes: feed both the same batch"
    if len(s) == 4:
        if s[2:] != t[2:] and s[1] != t[1]:
            return "use connector={'type': 'conv1x1_bn', 'resize': True} (spatial resize + channel projection)"
        if s[2:] != t[2:]:
            return "use connector={'type': 'conv1x1_bn', 'resize': True} or tap layers of equal resolution"
        return "use connector='conv1x1_bn' (or 'conv1x1') to map student channels to teacher channels"
    if len(s) == 2:
        return "use connector='linear' (or 'mlp') to map student features to the teacher's width"
    if len(s) == 3 and s[:2] == t[:2]:
        return "use connector='token_linear' to map each token's features to the teacher's width"
    return "use a connector that maps the student tensor to the teacher's shape"


def check_same_shape(student: Tensor, teacher: Tensor, where: str = "") -> None:
    """Raise :class:`ShapeMismatchError` naming both shapes and the connector to use."""
    if student.shape != teacher.shape:
        at = f" in {where}" if where else ""
        raise ShapeMismatchError(
            f"shape mismatch{at}: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; "
            f"{suggest_connector(student.shape, teacher.shape)}"
        )


def check_rank(x: Tensor, ranks: Sequence[int], name: str, loss: str) -> None:
    """Raise :class:`ShapeMismatchError` unless ``x.dim()`` is one of ``ranks``."""
    if x.dim() not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ShapeMismatchError(f"{loss}: {name} must be {want}, got shape {tuple(x.shape)}")


def batch_mean(x: Tensor) -> Tensor:
    """Sum over all dims but the first, mean over the batch."""
    return x.reshape(x.shape[0], -1).sum(1).mean()


__all__ = [
    "DistillLoss",
    "ShapeMismatchError",
    "LossArgumentError",
    "check_temperature",
    "suggest_connector",
    "check_same_shape",
    "check_rank",
    "batch_mean",
]
