"""Response (logit) distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .base import DistillLoss, check_rank, check_same_shape


def kl_div_logits(student: Tensor, teacher: Tensor, T: float) -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) · T²`` summed over classes, averaged over the batch (2-D logits)."""
    log_p_s = F.log_softmax(student / T, dim=1)
    log_p_t = F.log_softmax(teacher / T, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean() * (T * T)


@LOSSES.register("kd")
class KDLoss(DistillLoss):
    r"""Vanilla knowledge distillation (Hinton, Vinyals & Dean, *Distilling the Knowledge in a Neural
    Network*, NIPS DL workshop 2015).

    .. math:: \mathcal{L}_{KD} = T^2 \cdot \frac{1}{N}\sum_n \mathrm{KL}\big(\sigma(t_n/T)\,\|\,\sigma(s_n/T)\big)

    The :math:`T^2` factor keeps gradient magnitudes independent of the temperature. Inputs are
    ``(N, C)`` logits. ``T=4`` is the common CIFAR setting (CRD/mdistiller benchmarks).

    Several teachers (``multi_teacher``): the target is the weighted mean of their soft labels,
    :math:`p_t = \sum_k w_k\,\sigma(t_k/T)` with :math:`\sum_k w_k = 1` (equal weights by default).
    """

    multi_teacher = True

    def __init__(self, T: float = 4.0) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"kd: temperature T must be > 0, got {T}")
        self.T = T

    def forward(self, student: Tensor, teacher: Tensor | list[Tensor], **ctx: object) -> Tensor:
        check_rank(student, (2,), "student logits", "kd")
        if isinstance(teacher, Tensor):
            check_same_shape(student, teacher, "kd")
            return kl_div_logits(student, teacher, self.T)
        for t in teacher:
            check_same_shape(student, t, "kd")
        w = torch.tensor(ctx.get("teacher_weights") or [1.0] * len(teacher), dtype=student.dtype,  # type: ignore[arg-type]
                         device=student.device)
        p_t = sum(wk * F.softmax(t / self.T, dim=1) for wk, t in zip(w / w.sum(), teacher))
        log_p_s = F.log_softmax(student / self.T, dim=1)
        return (p_t * (p_t.clamp_min(1e-12).log() - log_p_s)).sum(1).mean() * (self.T * self.T)

    def extra_repr(self) -> str:
        return f"T={self.T}"
