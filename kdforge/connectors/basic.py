"""The general-purpose connectors: identity, 1×1/3×3 convolutions (+BN, resize), linear, MLP."""
from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import CONNECTORS
from .base import Connector, Shape


@CONNECTORS.register("identity")
class Identity(Connector):
    """No adaptation: shapes must already match."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class _ConvConnector(Connector):
    """``resize`` → conv → [BN] → [ReLU]; output channels = teacher channels unless given."""

    def __init__(self, kernel_size: int, bn: bool, relu: bool = False, out_channels: int | None = None,
                 resize: bool = False) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.resize = resize
        self.target_size: tuple[int, ...] | None = None
        layers: list[nn.Module] = [nn.LazyConv2d(out_channels or 0, kernel_size, padding=kernel_size // 2,
                                                 bias=not bn)]
        if bn:
            layers.append(nn.LazyBatchNorm2d())
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(teacher_shape) != 4 or len(student_shape) != 4:
            raise ValueError(f"{type(self).__name__} maps 4-D feature maps (N,C,H,W), got student "
                             f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}; use 'linear' for 2-D")
        if self.out_channels is None:
            self.net[0].out_channels = teacher_shape[1]
        if self.resize:
            self.target_size = tuple(teacher_shape[2:])

    def forward(self, x: Tensor) -> Tensor:
        if self.target_size is not None:
            x = _resize(x, self.target_size)
        return self.net(x)


@CONNECTORS.register("conv1x1")
class Conv1x1(_ConvConnector):
    """1×1 convolution (with bias) to the teacher's channel count."""

    def __init__(self, out_channels: int | None = None, resize: bool = False) -> None:
        super().__init__(1, bn=False, out_channels=out_channels, resize=resize)


@CONNECTORS.register("conv1x1_bn")
class Conv1x1BN(_ConvConnector):
    """1×1 convolution + BatchNorm (FitNet/OFD-style regressor)."""

    def __init__(self, out_channels: int | None = None, resize: bool = False) -> None:
        super().__init__(1, bn=True, out_channels=out_channels, resize=resize)


@CONNECTORS.register("conv3x3_bn")
class Conv3x3BN(_ConvConnector):
    """3×3 convolution + BatchNorm (FitNet's convolutional regressor)."""

    def __init__(self, out_channels: int | None = None, resize: bool = False, relu: bool = False) -> None:
        super().__init__(3, bn=True, relu=relu, out_channels=out_channels, resize=resize)


def _flat(x: Tensor) -> Tensor:
    return x.flatten(1) if x.dim() > 2 else x


@CONNECTORS.register("linear")
class Linear(Connector):
    """Linear map of (flattened) student features to the teacher's width."""

    def __init__(self, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.out_features = out_features
        self.fc = nn.LazyLinear(out_features or 0, bias=bias)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if self.out_features is None:
            self.fc.out_features = _numel(teacher_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(_flat(x))


@CONNECTORS.register("mlp")
class MLP(Connector):
    """Two-layer MLP (Linear → BN → ReLU → Linear) to the teacher's width."""

    def __init__(self, hidden: int | None = None, out_features: int | None = None) -> None:
        super().__init__()
        self.hidden, self.out_features = hidden, out_features
        self.fc1 = nn.LazyLinear(hidden or 0)
        self.bn = nn.LazyBatchNorm1d()
        self.fc2 = nn.LazyLinear(out_features or 0)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        out = self.out_features or _numel(teacher_shape)
        self.fc2.out_features = out
        if self.hidden is None:
            self.fc1.out_features = max(out, _numel(student_shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(_flat(x)))))


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape[1:]:
        n *= d
    return n


