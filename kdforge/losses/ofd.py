"""Overhaul of Feature Distillation (OFD): margin ReLU target + partial L2 on pre-ReLU features."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_same_shape

MarginSpec = Tensor | Sequence[float] | Sequence[Tensor | Sequence[float]]


def ofd_margin(bn: nn.Module) -> Tensor:
    r"""Per-channel margin from a BatchNorm's affine parameters (clovaai ``get_margin_from_BN``).

    The BN output of channel :math:`c` is modelled as :math:`\mathcal{N}(\beta_c, \gamma_c^2)`; the
    margin is the expected value of its negative part, :math:`E[x \mid x < 0]`:

    .. math:: m_c = \beta_c - |\gamma_c|\,\frac{\varphi(\beta_c/|\gamma_c|)}{\Phi(-\beta_c/|\gamma_c|)}
              \quad\text{if } \Phi(-\beta_c/|\gamma_c|) > 0.001, \text{ else } -3|\gamma_c|.

    Returns a float32 tensor of shape ``(C,)`` on the BN's device.
    """
    if not isinstance(bn, _BatchNorm) or not bn.affine:
        raise ValueError(f"ofd: the margin needs an affine BatchNorm, got {type(bn).__name__}"
                         + ("" if not isinstance(bn, _BatchNorm) else " with affine=False"))
    if isinstance(bn.weight, nn.parameter.UninitializedParameter):
        raise ValueError("ofd: the teacher BatchNorm is still lazy (uninitialised); run the teacher once first")
    s = bn.weight.detach().double().abs().clamp_min(1e-12)
    m = bn.bias.detach().double()
    cdf = torch.special.ndtr(-m / s)
    pdf = torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(cdf > 0.001, -s * pdf / cdf.clamp_min(1e-300) + m, -3 * s)
    return margin.float()


def _margin_list(margin: MarginSpec) -> list[Tensor]:
    """One ``(C,)`` tensor per tap from a tensor, a list of floats, or a list of those."""
    if isinstance(margin, Tensor):
        return [margin.detach().float().flatten()]
    items = list(margin)
    if items and all(isinstance(v, (int, float)) for v in items):
        return [torch.tensor(items, dtype=torch.float32)]
    return [torch.as_tensor(v, dtype=torch.float32).detach().flatten() for v in items]


@LOSSES.register("ofd")
class OFDLoss(DistillLoss):
    r"""Overhaul of feature distillation (Heo, Kim, Yun, Park, Kwak & Choi, *A Comprehensive Overhaul
    of Feature Distillation*, ICCV 2019).

    Teacher target through the margin ReLU, then partial L2 on the student's connector output
    :math:`s` (pre-ReLU, connector ``conv1x1_bn``):

    .. math:: \tilde t = \max(t, m),\qquad
              \mathcal{L}_{OFD} = \sum_k w_k \frac{1}{N}\sum_{i} (s_i - \tilde t_i)^2\,
              \mathbb{1}\big[\,s_i > \tilde t_i \ \lor\ \tilde t_i > 0\,\big]

    i.e. no loss where the student is already below a non-positive target. The margin :math:`m`
    (per channel, :func:`ofd_margin`) comes from the teacher BN that produces the tapped pre-ReLU
    feature: :meth:`setup` uses the teacher tap itself when it names a BatchNorm, else ``teacher_bn``
    (a dotted module path, or one per teacher tap); or pass ``margin`` explicitly (a ``(C,)`` tensor
    or list, or one per tap). Margins are buffers (``margin0``, ``margin1``, …).

    Following the official code (clovaai/overhaul-distillation): the per-tap sum is divided by the
    batch size — the training script, not the distiller, does ``loss.sum() / batch_size / 1000``
    (CIFAR; ``/ 10000`` on ImageNet), so the recipe-level job weight is ``1e-3`` (``1e-4`` on
    ImageNet; mdistiller ``OFD.LOSS.FEAT_WEIGHT = 0.001``). The official distiller weights tap
    :math:`k` of :math:`K` (shallow → deep) by :math:`w_k = 1/2^{K-1-k}`; that is the default of
    ``layer_weights``. One job compares all its taps at once (``pairwise = False``).
    """

    pairwise = False

    @property
    def needs_teacher_model(self) -> bool:  # type: ignore[override]
        """Margins not given: :meth:`setup` reads them from the teacher's BatchNorm."""
        return not self.n_margins

    def __init__(self, margin: MarginSpec | None = None, teacher_bn: str | Sequence[str] | None = None,
                 layer_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.teacher_bn = [teacher_bn] if isinstance(teacher_bn, str) else (list(teacher_bn) if teacher_bn else None)
        self.layer_weights = list(layer_weights) if layer_weights is not None else None
        self.n_margins = 0
        if margin is not None:
            self._set_margins(_margin_list(margin))

    def _set_margins(self, margins: list[Tensor]) -> None:
        for i, m in enumerate(margins):
            if m.dim() != 1 or m.numel() == 0:
                raise ValueError(f"ofd: margin {i} must be a 1-D per-channel tensor, got shape {tuple(m.shape)}")
            if (m > 0).any():
                raise ValueError(f"ofd: margin {i} has positive entries; the margin is E[x | x < 0] and is negative")
            self.register_buffer(f"margin{i}", m.view(1, -1, 1, 1).clone())
        self.n_margins = len(margins)

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{i}") for i in range(self.n_margins)]

    def setup(self, student: nn.Module, teachers: Sequence[nn.Module], student_taps: Sequence[str],
              teacher_taps: Sequence[str]) -> None:
        """Compute the margins from the teacher's BatchNorm(s) (see the class docstring)."""
        if self.n_margins:
            if self.n_margins != len(teacher_taps):
                raise ValueError(f"ofd: {self.n_margins} margin(s) given for {len(teacher_taps)} teacher taps "
                                 f"{list(teacher_taps)}; give one per tap")
            return
        if len(teachers) != 1:
            raise ValueError(f"ofd: the margin comes from one teacher's BN statistics but the job has "
                             f"{len(teachers)} teachers; use one ofd job per teacher")
        if self.teacher_bn is not None and len(self.teacher_bn) != len(teacher_taps):
            raise ValueError(f"ofd: teacher_bn names {len(self.teacher_bn)} module(s) {self.teacher_bn} for "
                             f"{len(teacher_taps)} teacher taps {list(teacher_taps)}; give one per tap")
        teacher = teachers[0]
        margins = []
        for i, spec in enumerate(teacher_taps):
            bn = self._find_bn(teacher, spec, self.teacher_bn[i] if self.teacher_bn else None)
            margins.append(ofd_margin(bn))
        device = next((p.device for p in student.parameters()), None)  # the teacher may be on another device
        self._set_margins([m.to(device) for m in margins] if device is not None else margins)

    @staticmethod
    def _find_bn(teacher: nn.Module, spec: str, explicit: str | None) -> nn.Module:
        if explicit is not None:
            try:
                bn = teacher.get_submodule(explicit)
            except AttributeError:
                raise ValueError(f"ofd: teacher has no module {explicit!r} (teacher_bn); "
                                 f"print(teacher) to list module paths") from None
            if not isinstance(bn, _BatchNorm):
                raise ValueError(f"ofd: teacher_bn {explicit!r} is a {type(bn).__name__}, not a BatchNorm")
            return bn
        path, _, kind = spec.partition(":")
        mod: Any = None
        if not spec.startswith("@") and kind in ("", "output"):
            try:
                mod = teacher.get_submodule(path)
            except AttributeError:
                mod = None
        if isinstance(mod, _BatchNorm):
            return mod
        what = type(mod).__name__ if mod is not None else "not a module output"
        raise ValueError(f"ofd: teacher tap {spec!r} is {what}, not a BatchNorm, so the margin cannot be read "
                         f"from it; pass teacher_bn='<dotted path of the BN before the ReLU>' (one per tap) "
                         f"or margin=<per-channel tensor>")

    def forward(self, student: Tensor | list[Tensor], teacher: Tensor | list[Tensor], **ctx: object) -> Tensor:
        s_list = [student] if isinstance(student, Tensor) else list(student)
        t_list = [teacher] if isinstance(teacher, Tensor) else list(teacher)
        if len(s_list) != len(t_list):
            raise ShapeMismatchError(f"ofd: {len(s_list)} student taps vs {len(t_list)} teacher taps; pair them")
        if self.n_margins == 0:
            raise ValueError("ofd has no margin: build it inside a Distiller (setup reads the teacher BN) "
                             "or pass margin=<per-channel tensor> / teacher_bn=... ")
        if self.n_margins != len(t_list):
            raise ShapeMismatchError(f"ofd: {self.n_margins} margin(s) for {len(t_list)} tap pairs")
        k = len(s_list)
        weights = self.layer_weights or [1.0 / 2 ** (k - 1 - i) for i in range(k)]
        if len(weights) != k:
            raise ValueError(f"ofd: layer_weights has {len(weights)} entries for {k} tap pairs")
        total: Tensor | float = 0.0
        for i, (s, t, m) in enumerate(zip(s_list, t_list, self.margins())):
            check_same_shape(s, t, "ofd")
            if s.dim() != 4 or t.shape[1] != m.shape[1]:
                raise ShapeMismatchError(f"ofd: pair {i}: teacher feature {tuple(t.shape)} must be (N, C, H, W) with "
                                         f"C = {m.shape[1]} channels of its margin; tap the pre-ReLU BN output")
            target = torch.maximum(t, m.to(t.dtype))
            mask = (s > target) | (target > 0)
            total = total + weights[i] * ((s - target).pow(2) * mask).sum() / s.shape[0]
        assert isinstance(total, Tensor)
        return total

    def extra_repr(self) -> str:
        return f"n_margins={self.n_margins}, teacher_bn={self.teacher_bn}, layer_weights={self.layer_weights}"
