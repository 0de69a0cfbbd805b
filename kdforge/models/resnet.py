"""CIFAR-style ResNets (He et al., 2016) as used in the KD literature (CRD, DKD, mdistiller).

Three stages of basic blocks (``layer1``–``layer3``, strides 1/2/2) after a 3×3 stem; depth is
``6n + 2``. The ``x4`` variants widen every stage four times (32-64-128-256 channels). The stem keeps
the input resolution, so 28×28 Fashion-MNIST and 32×32 CIFAR images both work; ``avgpool`` is
adaptive, any input of at least 16×16 works.

Module names follow the reference code so taps read the same as in papers' configs:
``conv1, bn1, relu, layer1..layer3, avgpool, fc`` and blocks with ``conv1, bn1, relu, conv2, bn2,
downsample`` (e.g. ``"layer3.1.bn2"`` is the BN before the last residual sum and ReLU).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the (projected) input, then ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place: a tap on ``bn2`` keeps the pre-sum value without a defensive copy.
        return F.relu(out + identity)


class ResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` with stage widths ``num_filters`` (stem, s1, s2, s3)."""

    def __init__(
        self,
        depth: int,
        num_filters: tuple[int, int, int, int] = (16, 16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(in_channels, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n, stride=1)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _resnet(depth: int, filters: tuple[int, int, int, int], num_classes: int, in_channels: int) -> ResNet:
    return ResNet(depth, filters, num_classes=num_classes, in_channels=in_channels)


_THIN = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-8 (16-16-32-64 channels)."""
    return _resnet(8, _THIN, num_classes, in_channels)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-14 (16-16-32-64 channels)."""
    return _resnet(14, _THIN, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-20 (16-16-32-64 channels)."""
    return _resnet(20, _THIN, num_classes, in_channels)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-32 (16-16-32-64 channels)."""
    return _resnet(32, _THIN, num_classes, in_channels)


@MODELS.register("resnet44")
def resnet44(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-44 (16-16-32-64 channels)."""
    return _resnet(44, _THIN, num_classes, in_channels)


@MODELS.register("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-56 (16-16-32-64 channels)."""
    return _resnet(56, _THIN, num_classes, in_channels)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-110 (16-16-32-64 channels)."""
    return _resnet(110, _THIN, num_classes, in_channels)


@MODELS.register("resnet8x4")
def resnet8x4(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-8x4 (32-64-128-256 channels)."""
    return _resnet(8, _X4, num_classes, in_channels)


@MODELS.register("resnet32x4")
def resnet32x4(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-32x4 (32-64-128-256 channels)."""
    return _resnet(32, _X4, num_classes, in_channels)


__all__ = [
    "BasicBlock", "ResNet", "conv3x3",
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
]
