"""Dense-prediction (per-pixel) response distillation."""
from __future__ import annotations

from torch import Tensor

from ..registry import LOSSES
from .base import DistillLoss, check_rank, check_same_shape, check_temperature, kl_with_temperature


@LOSSES.register("seg_kl")
class SegKLLoss(DistillLoss):
    r"""Pixel-wise distillation of segmentation logits (Liu et al., *Structured Knowledge Distillation
    for Semantic Segmentation*, CVPR 2019, "pixel-wise distillation"; the seeds' ``KLLoss``).

    .. math:: \mathcal{L}_{pi} = \frac{T^2}{N H W}\sum_{n,h,w}
              \mathrm{KL}\big(\sigma(t_{n,:,h,w}/T)\,\|\,\sigma(s_{n,:,h,w}/T)\big)

    Inputs are ``(N, C, H, W)`` logits (student resized to the teacher's size is the caller's job).
    ``T=1`` as in the paper and CIRKD's ``CriterionKD`` (``batchmean`` over the ``N·H·W`` pixel rows).
    SKD's own code uses the cross-entropy ``-Σ p_t log p_s`` (same gradient as KL) divided by ``H·W``
    but summed over the batch, i.e. ``N`` times this value; its weight λ=10 corresponds to 10·N here —
    typical kdforge weights are 1–10.
    """

    def __init__(self, T: float = 1.0) -> None:
        super().__init__()
        check_temperature(T, "T", "seg_kl")
        self.T = T

    def forward(self, student: Tensor, teacher: Tensor, **ctx: object) -> Tensor:
        check_rank(student, (4,), "student logits", "seg_kl")
        check_same_shape(student, teacher, "seg_kl")
        return kl_with_temperature(student.float(), teacher.float(), self.T).mean()  # mean over (N, H, W)

    def extra_repr(self) -> str:
        return f"T={self.T}"
