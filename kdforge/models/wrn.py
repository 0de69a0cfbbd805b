"""Wide residual networks (Zagoruyko & Komodakis, 2016), CIFAR variants ``wrn_<depth>_<width>``.

Pre-activation blocks (``bn1, relu1, conv1, bn2, relu2, conv2, convShortcut``) grouped in
``block1..block3`` (each a ``NetworkBlock`` holding ``layer``, so a tap reads ``"block2.layer.0.bn1"``),
then ``bn1, relu, avgpool, fc``. Depth is ``6n + 4``. ``avgpool`` is adaptive.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS
from .init import he_init


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: bn-relu-conv-bn-relu-conv plus the (projected) input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # As in the reference: the shortcut projection sees the activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return out + shortcut


class NetworkBlock(nn.Module):
    """``nb_layers`` wide blocks; the first one changes width/stride."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(nb_layers)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for small images."""

    def __init__(
        self,
        depth: int,
        widen_factor: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], num_classes)
        he_init(self, linear_std=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(self.avgpool(out).flatten(1))


@MODELS.register("wrn_16_1")
def wrn_16_1(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-16-1."""
    return WideResNet(16, 1, num_classes=num_classes, in_channels=in_channels)


@MODELS.register("wrn_16_2")
def wrn_16_2(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-16-2."""
    return WideResNet(16, 2, num_classes=num_classes, in_channels=in_channels)


@MODELS.register("wrn_40_1")
def wrn_40_1(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-40-1."""
    return WideResNet(40, 1, num_classes=num_classes, in_channels=in_channels)


@MODELS.register("wrn_40_2")
def wrn_40_2(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    """WRN-40-2."""
    return WideResNet(40, 2, num_classes=num_classes, in_channels=in_channels)


__all__ = ["NetworkBlock", "WideBasicBlock", "WideResNet", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]
