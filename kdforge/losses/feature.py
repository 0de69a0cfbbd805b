"""Intermediate-feature distillation losses."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .base import DistillLoss, check_same_shape


@LOSSES.register("fitnet")
class FitNetLoss(DistillLoss):
    r"""FitNets hint loss (Romero et al., *FitNets: Hints for Thin Deep Nets*, ICLR 2015).

    .. math:: \mathcal{L}_{hint} = \frac{1}{|u|}\,\| u_h(x) - r(v_g(x)) \|_2^2

    where :math:`u_h` is the teacher's hint layer, :math:`v_g` the student's guided layer and
    :math:`r` the regressor — in kdforge the job's connector (``conv1x1_bn`` or ``conv3x3_bn``).
    The paper writes ½‖·‖²; like its successors' code (CRD, mdistiller) we average over all
    elements, so the usual weight is 100 (mdistiller's ``FITNET.LOSS.FEAT_WEIGHT``).
    """

    def forward(self, student: Tensor, teacher: Tensor, **ctx: object) -> Tensor:
        check_same_shape(student, teacher, "fitnet")
        return F.mse_loss(student, teacher)
