"""Factor Transfer's adapters (Kim et al., NeurIPS 2018): the teacher-side paraphraser and the
student-side translator, registered as ``paraphraser`` and ``translator`` (the loss is
:class:`kdforge.losses.ft.FTLoss`)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..losses.base import ShapeMismatchError
from ..registry import CONNECTORS
from .base import Connector, Shape


def factor_channels(teacher_channels: int, k: float) -> int:
    """Factor width ``round(k · C_t)`` (the author's ``int(round(64*RATE))``), at least 1."""
    return max(1, int(round(teacher_channels * k)))


def _conv_stack(transpose: bool) -> nn.Sequential:
    """Three lazy 3×3 (transposed) convolutions, each followed by LeakyReLU(0.1)."""
    make = nn.LazyConvTranspose2d if transpose else nn.LazyConv2d
    layers: list[nn.Module] = []
    for _ in range(3):
        layers += [make(0, 3, padding=1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


def _set_widths(stack: nn.Sequential, widths: tuple[int, int, int]) -> None:
    for conv, w in zip(stack[0::2], widths):
        conv.out_channels = w


@CONNECTORS.register("paraphraser")
class Paraphraser(Connector):
    r"""FT's paraphraser: a convolutional auto-encoder on the teacher feature.

    Encoder ``conv3x3(C→C) → conv3x3(C→kC) → conv3x3(kC→kC)``, decoder ``deconv3x3(kC→kC) →
    deconv3x3(kC→C) → deconv3x3(C→C)``, every layer followed by LeakyReLU(0.1), no BN (the
    author's ``Models/FeatureProjection.py``). ``forward(x)`` returns the factor; :meth:`reconstruct`
    the decoded feature. ``C`` is the teacher's channel count, bound from ``teacher_shape``.
    The ``trained`` buffer records that :func:`pretrain_paraphraser` ran (it is saved in state_dict).
    """

    def __init__(self, k: float = 0.5) -> None:
        super().__init__()
        self.k = k
        self.encoder = _conv_stack(transpose=False)
        self.decoder = _conv_stack(transpose=True)
        self.register_buffer("trained", torch.tensor(False))  # set by pretrain_paraphraser; saved with it

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(teacher_shape) != 4:
            raise ShapeMismatchError(f"paraphraser: the teacher feature must be 4-D (N,C,H,W), got {tuple(teacher_shape)}")
        c = teacher_shape[1]
        m = factor_channels(c, self.k)
        _set_widths(self.encoder, (c, m, m))
        _set_widths(self.decoder, (m, c, c))

    def forward(self, x: Tensor) -> Tensor:
        self.bind_once(x.shape, x.shape)
        return self.encoder(x)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.forward(x))


@CONNECTORS.register("translator")
class Translator(Connector):
    """FT's translator on the student: ``conv3x3(C_s→C_s) → conv3x3(C_s→kC_t) → conv3x3(kC_t→kC_t)``,
    each followed by LeakyReLU(0.1), no BN (author's code; RepDistiller adds BN)."""

    def __init__(self, k: float = 0.5) -> None:
        super().__init__()
        self.k = k
        self.encoder = _conv_stack(transpose=False)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(student_shape) != 4 or len(teacher_shape) != 4:
            raise ShapeMismatchError(f"translator: student and teacher features must be 4-D (N,C,H,W), got "
                                     f"student {tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        m = factor_channels(teacher_shape[1], self.k)
        _set_widths(self.encoder, (student_shape[1], m, m))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)
