"""Self-distillation: the network's deepest classifier teaches auxiliary classifiers on its shallow stages.

``byot`` holds the auxiliary heads it builds itself, so the Distiller's ``student`` stays the plain
network (what is deployed); the heads' parameters train through ``distiller.learnable_parameters()``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_rank, check_temperature
from .response import _need_labels, kl_div_logits

if TYPE_CHECKING:
    from ..job import DistillJob


class AuxHead(nn.Module):
    """Bottleneck + classifier attached to a shallow stage (lazily shaped on first call).

    ``conv1x1(C_i→C/4)-BN-ReLU → conv k×k stride k (C/4→C/4)-BN-ReLU → conv1x1(C/4→C)-BN-ReLU`` with
    ``C`` the deepest stage's channels and ``k = H_i // H_C`` its downsampling factor (the
    ``branchBottleNeck`` of the BYOT PyTorch code), then global average pooling and a linear classifier.
    Parameters exist (uninitialised) from construction, so an optimiser built beforehand trains them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.LazyConv2d(0, 1), nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.LazyConv2d(0, 1), nn.LazyBatchNorm2d(), nn.ReLU(),
            nn.LazyConv2d(0, 1), nn.LazyBatchNorm2d(), nn.ReLU())
        self.fc = nn.LazyLinear(0)
        self.bound = False

    def bind(self, feat_shape: Sequence[int], deep_shape: Sequence[int], num_classes: int) -> None:
        """Fix widths and the stride from the shallow feature, the deepest feature and the class count."""
        c_out = int(deep_shape[1])
        mid = max(c_out // 4, 1)
        k = max(int(feat_shape[2]) // int(deep_shape[2]), 1) if len(deep_shape) == 4 else 1
        conv1, conv2, conv3 = self.bottleneck[0], self.bottleneck[3], self.bottleneck[6]
        conv1.out_channels, conv2.out_channels, conv3.out_channels = mid, mid, c_out
        conv2.kernel_size, conv2.stride = (k, k), (k, k)
        self.fc.out_features = num_classes
        self.bound = True

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled feature (N, C), logits (N, num_classes))``."""
        f = F.adaptive_avg_pool2d(self.bottleneck(x), 1).flatten(1)
        return f, self.fc(f)


@LOSSES.register("byot")
class SelfDistillLoss(DistillLoss):
    r"""Be Your Own Teacher (Zhang, Song, Gao, Chen, Bao & Ma, *Be Your Own Teacher: Improve the
    Performance of Convolutional Neural Networks via Self Distillation*, ICCV 2019).

    Student taps: the shallow stages :math:`1..C-1`, each getting an :class:`AuxHead` (bottleneck to the
    deepest stage's shape, pooling, classifier) with feature :math:`F_i` and logits :math:`q_i`. Teacher
    taps (from the ``"self"`` teacher, i.e. detached): the deepest stage feature and the final logits
    :math:`q_C`, with :math:`F_C` the deepest feature average-pooled.

    .. math::
        \mathcal{L} = \sum_{i=1}^{C-1} \Big[(1-\alpha)\,\mathrm{CE}(q_i, y)
            + \alpha\,T^2\,\mathrm{KL}\big(\sigma(q_C/T)\,\|\,\sigma(q_i/T)\big)
            + \lambda\,\|F_i - F_C\|_2^2\Big]

    CE and KL are batch means; the feature term is summed over the batch and channels as in the
    PyTorch BYOT code (luanyunteng/pytorch-be-your-own-teacher), whose defaults we take:
    ``T=3, alpha=0.1, lam=1e-6`` (the authors' released journal-version code also uses T=3, with
    ``alpha=0.3`` and no feature term). The deepest classifier's own ``(1-α)·CE`` is the trainer's task
    loss: set ``train.ce_weight = 1 - alpha``. Needs ``ctx["labels"]``.

    ``aux_logits`` holds the heads' last logits (detached, shallow → deep) to report each exit's
    accuracy; ``heads`` are not part of ``distiller.student``.
    """

    pairwise = False
    same_shape = False

    def __init__(self, T: float = 3.0, alpha: float = 0.1, lam: float = 1e-6) -> None:
        super().__init__()
        check_temperature(T, "T", "byot")
        if not 0 <= alpha <= 1:
            raise ValueError(f"byot: alpha weighs KD against CE and must be in [0, 1], got {alpha}")
        if lam < 0:
            raise ValueError(f"byot: feature weight lam must be >= 0, got {lam}")
        self.T, self.alpha, self.lam = T, alpha, lam
        self.heads = nn.ModuleList()
        self.aux_logits: list[Tensor] = []

    def setup(self, student: nn.Module | None = None, teachers: Any = None,
              student_taps: Sequence[str] = (), teacher_taps: Sequence[str] = ()) -> None:
        """Called by the Distiller: one head per student tap, before the optimiser is built."""
        if len(teacher_taps) != 2:
            raise ValueError(f"byot: the teacher taps must be [deepest stage feature, final logits] "
                             f"(e.g. ['layer3', 'fc']), got {list(teacher_taps)}")
        self._ensure_heads(len(student_taps))

    def _ensure_heads(self, n: int) -> None:
        if not self.heads:
            self.heads.extend(AuxHead() for _ in range(n))
        elif len(self.heads) != n:
            raise ValueError(f"byot: built for {len(self.heads)} shallow stages, called with {n}")

    def forward(self, student: list[Tensor], teacher: list[Tensor], **ctx: Any) -> Tensor:
        if isinstance(student, Tensor) or isinstance(teacher, Tensor) or len(teacher) != 2:
            raise ValueError("byot: call with student=[shallow stage features], teacher=[deepest feature, "
                             "final logits] (a job with pairwise=False and teacher taps e.g. ['layer3', 'fc'])")
        if not student:
            raise ValueError("byot: needs at least one shallow stage (student tap)")
        deep, logits = teacher
        check_rank(logits, (2,), "final logits (second teacher tap)", "byot")
        check_rank(deep, (2, 4), "deepest feature (first teacher tap)", "byot")
        labels = _need_labels(ctx, logits, "byot")
        f_c = (F.adaptive_avg_pool2d(deep, 1).flatten(1) if deep.dim() == 4 else deep).detach()
        q_c = logits.detach()
        self._ensure_heads(len(student))
        total: Tensor = logits.new_zeros(())
        aux = []
        for i, (x, head) in enumerate(zip(student, self.heads)):
            check_rank(x, (4,), f"shallow stage feature {i}", "byot")
            if x.shape[0] != logits.shape[0]:
                raise ShapeMismatchError(f"byot: stage {i} has batch {x.shape[0]}, logits {logits.shape[0]}")
            if not head.bound:
                head.bind(x.shape, deep.shape, logits.shape[1])
            f_i, q_i = head(x)
            ce = F.cross_entropy(q_i, labels)
            kd = kl_div_logits(q_i, q_c, self.T)
            feat = (f_i - f_c).pow(2).sum()
            total = total + (1 - self.alpha) * ce + self.alpha * kd + self.lam * feat
            aux.append(q_i.detach())
        self.aux_logits = aux
        return total

    def extra_repr(self) -> str:
        return f"T={self.T}, alpha={self.alpha}, lam={self.lam}"


def self_distillation_job(stages: list[str], deepest: str, logits: str, name: str = "byot",
                          weight: float = 1.0, **loss_kwargs: Any) -> "DistillJob":
    """A BYOT job: heads on ``stages`` taught by the network's own ``deepest`` stage and ``logits``.

    >>> job = self_distillation_job(["layer1", "layer2"], "layer3", "fc")
    >>> distiller = Distiller(net, None, [job])   # train with ce_weight = 1 - alpha
    """
    from ..job import SELF, DistillJob  # kdforge.job imports this package: import at call time

    if isinstance(stages, str):
        stages = [stages]
    return DistillJob(loss={"type": "byot", **loss_kwargs}, student=list(stages), teacher=[deepest, logits],
                      teachers=[SELF], name=name, weight=weight)


__all__ = ["AuxHead", "SelfDistillLoss", "self_distillation_job"]
