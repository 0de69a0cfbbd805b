"""Adversarial distillation: a discriminator on the logits (MEAL-V2)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..registry import LOSSES
from .base import DistillLoss, check_rank, check_same_shape


class LogitDiscriminator(nn.Module):
    """MEAL-V2's discriminator: 3 fully connected layers ``C → C/K → C/K² → 2`` with ReLU between.

    The official ``Discriminator(outputs_size=1000, K=8)`` uses 1×1 convolutions on ``(N, C, 1, 1)``,
    which are these linear layers. Hidden widths are floored at ``min_width`` so that few-class problems
    (C=10: 10//8 = 1) keep a usable network. Output: 2 logits, ``[student, teacher]``. The official code
    also applies a ReLU to the two output logits (``final_relu=True`` reproduces it); we leave it off by
    default since it clamps the logits at 0 and kills the gradient of samples whose logits are both clamped.
    Layers are lazy: widths are set from the number of classes on the first call.
    """

    def __init__(self, K: int = 8, min_width: int = 8, final_relu: bool = False) -> None:
        super().__init__()
        if K < 1 or min_width < 1:
            raise ValueError(f"meal_disc: K and min_width must be >= 1, got K={K}, min_width={min_width}")
        self.K, self.min_width, self.final_relu = K, min_width, final_relu
        self.fc1, self.fc2, self.fc3 = nn.LazyLinear(0), nn.LazyLinear(0), nn.LazyLinear(2)
        self.bound = False

    def bind(self, num_classes: int) -> None:
        h1 = max(num_classes // self.K, self.min_width)
        self.fc1.out_features, self.fc2.out_features = h1, max(h1 // self.K, self.min_width)
        self.bound = True

    def forward(self, x: Tensor) -> Tensor:
        if not self.bound:
            self.bind(x.shape[1])
        out = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
        return F.relu(out) if self.final_relu else out


def _targets(n: int, teacher: bool, like: Tensor) -> Tensor:
    """One-hot ``[student, teacher]`` targets (MEAL-V2: student ``[1, 0]``, teacher ``[0, 1]``)."""
    t = like.new_zeros(n, 2)
    t[:, 1 if teacher else 0] = 1.0
    return t


@LOSSES.register("meal_disc")
class MealDiscriminatorLoss(DistillLoss):
    r"""Discriminator loss of MEAL V2 (Shen & Savvides, *MEAL V2: Boosting Vanilla ResNet-50 to 80%+
    Top-1 Accuracy on ImageNet without Tricks*, 2020; code szq0214/MEAL-V2).

    A discriminator :math:`D` (:class:`LogitDiscriminator`) tells the teacher ensemble's output
    :math:`\bar t = \sum_k w_k t_k` from the student's :math:`s` (``input="logits"``: the official code
    feeds the student logits and the mean of the teachers' logits; ``input="probs"``: softmax
    probabilities, ensemble = mean of the teachers' probabilities). With :math:`\ell` the binary
    cross-entropy with logits averaged over the 2 outputs and the batch, targets student ``[1,0]``,
    teacher ``[0,1]``:

    .. math::
        \mathcal{L} = \underbrace{\tfrac12\big[\ell(D(\mathrm{sg}(s)), [1,0]) + \ell(D(\bar t), [0,1])\big]}_{
            \text{discriminator: separate}}
          + \underbrace{\ell(D_{\mathrm{sg}(\theta_D)}(s), [0,1])}_{\text{student: fool } D}

    One backward trains both: the discriminator term sees the student's logits detached (sg), and the
    generator term runs :math:`D` with detached parameters (``torch.func.functional_call``), so the
    discriminator only learns to separate and the student only learns to fool it. (The official
    training script back-propagates the single discriminator loss into both; we use the standard
    GAN split, which is what the paper describes.) ``d_loss``/``g_loss`` hold the last values.

    Recipe: soft labels only — a ``kd`` job with ``T=1`` on the ensemble, this job with weight 1, and
    task-loss weight 0. MEAL-V2 trains the discriminator with its own learning rate ``1e-4`` (student
    0.01): put ``loss.parameters()`` in a separate optimiser parameter group to reproduce it.
    """

    multi_teacher = True

    def __init__(self, input: str = "logits", K: int = 8, min_width: int = 8, final_relu: bool = False) -> None:
        super().__init__()
        if input not in ("logits", "probs"):
            raise ValueError(f"meal_disc: input must be 'logits' or 'probs', got {input!r}")
        self.input = input
        self.discriminator = LogitDiscriminator(K, min_width, final_relu)
        self.d_loss: Tensor | None = None
        self.g_loss: Tensor | None = None

    def _ensemble(self, student: Tensor, teacher: Tensor | list[Tensor], weights: Any) -> Tensor:
        ts = [teacher] if isinstance(teacher, Tensor) else list(teacher)
        for t in ts:
            check_same_shape(student, t, "meal_disc")
        w = torch.tensor(weights or [1.0] * len(ts), dtype=student.dtype, device=student.device)
        w = w / w.sum()
        if self.input == "probs":
            return sum(wk * F.softmax(t, 1) for wk, t in zip(w, ts)).detach()  # type: ignore[return-value]
        return sum(wk * t for wk, t in zip(w, ts)).detach()  # type: ignore[return-value]

    def forward(self, student: Tensor, teacher: Tensor | list[Tensor], **ctx: Any) -> Tensor:
        check_rank(student, (2,), "student logits", "meal_disc")
        t = self._ensemble(student, teacher, ctx.get("teacher_weights"))
        s = F.softmax(student, 1) if self.input == "probs" else student
        n = s.shape[0]
        disc = self.discriminator
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(disc(s.detach()), _targets(n, False, s))
                        + F.binary_cross_entropy_with_logits(disc(t), _targets(n, True, s)))
        frozen = {k: p.detach() for k, p in disc.named_parameters()}
        g_loss = F.binary_cross_entropy_with_logits(functional_call(disc, frozen, (s,)), _targets(n, True, s))
        self.d_loss, self.g_loss = d_loss.detach(), g_loss.detach()
        return d_loss + g_loss

    @torch.no_grad()
    def accuracy(self, student: Tensor, teacher: Tensor | list[Tensor], teacher_weights: Any = None) -> float:
        """Fraction of the 2N inputs (student rows, ensemble rows) the discriminator classifies right."""
        t = self._ensemble(student, teacher, teacher_weights)
        s = F.softmax(student, 1) if self.input == "probs" else student
        right = (self.discriminator(s).argmax(1) == 0).sum() + (self.discriminator(t).argmax(1) == 1).sum()
        return right.item() / (2 * s.shape[0])

    def extra_repr(self) -> str:
        return f"input={self.input!r}"


__all__ = ["LogitDiscriminator", "MealDiscriminatorLoss"]
