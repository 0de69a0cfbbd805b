"""Variational Information Distillation (Ahn et al., CVPR 2019)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..connectors.vid import VIDRegressor
from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_rank


@LOSSES.register("vid")
class VIDLoss(DistillLoss):
    r"""Variational Information Distillation (Ahn, Hu, Damianou, Lawrence & Dai, *Variational
    Information Distillation for Knowledge Transfer*, CVPR 2019).

    Maximises a variational lower bound of the mutual information between teacher feature
    :math:`t` and student feature :math:`s` with a Gaussian :math:`q(t\mid s)` whose mean is a
    regressor :math:`\mu(s)` and whose variance is learnable per channel (heteroscedastic over
    channels, shared over positions):

    .. math::
        \sigma_c^2 = \operatorname{softplus}(\alpha_c) + \epsilon,\qquad
        \mathcal{L}_{VID} = \operatorname{mean}_{n,c,h,w}\;\tfrac12\Big(\log\sigma_c^2
            + \frac{(t_{nchw}-\mu(s)_{nchw})^2}{\sigma_c^2}\Big)

    :math:`\mu` = ``conv1x1(C_s→M) → ReLU → conv1x1(M→M) → ReLU → conv1x1(M→C_t)`` without bias,
    ``M = C_t`` unless ``mid_channels`` is given (RepDistiller builds ``VIDLoss(s, t, t)``);
    :math:`\alpha` is initialised so that :math:`\sigma^2 =` ``init_pred_var`` = 5.0; ``eps=1e-5``.
    Following RepDistiller (code from the authors) the negative log-likelihood is *averaged* over
    all elements (the paper sums it) and the constant ½·log 2π is dropped; the paper's weight is
    λ=1 per layer. Channel counts are inferred (lazy layers); spatial sizes that differ are
    average-pooled to the smaller one when ``resize=True`` (as RepDistiller), else rejected.
    2-D features (N, C) are treated as (N, C, 1, 1).
    """

    same_shape = False

    def __init__(self, mid_channels: int | None = None, init_pred_var: float = 5.0, eps: float = 1e-5,
                 resize: bool = True) -> None:
        super().__init__()
        if init_pred_var <= eps:
            raise ValueError(f"vid: init_pred_var ({init_pred_var}) must exceed eps ({eps})")
        self.mid_channels, self.init_pred_var, self.eps, self.resize = mid_channels, init_pred_var, eps, resize
        self.regressor = VIDRegressor(mid_channels)
        self.log_scale = nn.UninitializedParameter()  # one per teacher channel, materialised in bind()
        self.bound = False

    def bind(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        """Fix the regressor's widths and the variance parameter from the teacher's channel count."""
        c_t = teacher_shape[1]
        self.regressor.mid_channels = self.mid_channels
        self.regressor.bind(student_shape, teacher_shape)
        if isinstance(self.log_scale, nn.UninitializedParameter):
            self.log_scale.materialize((c_t,))
        elif self.log_scale.shape != (c_t,):
            raise ShapeMismatchError(f"vid: the variance parameter has {self.log_scale.numel()} channels but the "
                                     f"teacher feature {tuple(teacher_shape)} has {c_t}")
        with torch.no_grad():  # inverse softplus of (init_pred_var - eps)
            self.log_scale.fill_(math.log(math.expm1(self.init_pred_var - self.eps)))
        self.bound = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:  # type: ignore[no-untyped-def]
        key = prefix + "log_scale"
        if key in state_dict and isinstance(self.log_scale, nn.UninitializedParameter):
            mid = state_dict.get(prefix + "regressor.0.weight")
            if mid is not None and self.mid_channels is None:
                self.mid_channels = mid.shape[0]
            self.bind((0, 0), (0, state_dict[key].shape[0]))  # widths + parameter; values come from the load
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def pred_var(self) -> Tensor:
        """Per-channel variance :math:`\\operatorname{softplus}(\\alpha) + \\epsilon`."""
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student: Tensor, teacher: Tensor, **ctx: object) -> Tensor:
        check_rank(student, (2, 4), "student feature", "vid")
        check_rank(teacher, (2, 4), "teacher feature", "vid")
        if student.dim() != teacher.dim():
            raise ShapeMismatchError(f"vid: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ "
                                     f"in rank; tap layers of the same kind (both 4-D maps or both 2-D vectors)")
        if student.shape[0] != teacher.shape[0]:
            raise ShapeMismatchError(f"vid: batch sizes differ: student {tuple(student.shape)} vs teacher "
                                     f"{tuple(teacher.shape)}; feed both the same batch")
        if student.dim() == 2:
            student, teacher = student[:, :, None, None], teacher[:, :, None, None]
        if student.shape[2:] != teacher.shape[2:]:
            if not self.resize:
                raise ShapeMismatchError(f"vid: spatial sizes differ: student {tuple(student.shape)} vs teacher "
                                         f"{tuple(teacher.shape)}; tap layers of equal resolution or set resize=True")
            s_hw, t_hw = tuple(student.shape[2:]), tuple(teacher.shape[2:])
            if s_hw[0] * s_hw[1] > t_hw[0] * t_hw[1]:
                student = F.adaptive_avg_pool2d(student, t_hw)
            else:
                teacher = F.adaptive_avg_pool2d(teacher, s_hw)
        if not self.bound:
            self.bind(tuple(student.shape), tuple(teacher.shape))
        first = self.regressor[0]
        c_s = None if isinstance(first.weight, nn.UninitializedParameter) else first.weight.shape[1]
        if self.log_scale.numel() != teacher.shape[1] or c_s not in (None, student.shape[1]):
            raise ShapeMismatchError(f"vid: this loss was bound to {c_s} student / {self.log_scale.numel()} teacher "
                                     f"channels, got student {tuple(student.shape)} and teacher "
                                     f"{tuple(teacher.shape)}; use one vid loss (job) per tap pair")
        mean = self.regressor(student)
        var = self.pred_var().view(1, -1, 1, 1)
        nll = 0.5 * ((mean - teacher) ** 2 / var + torch.log(var))
        return nll.mean()


__all__ = ["VIDLoss", "VIDRegressor"]
