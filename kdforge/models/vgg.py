"""VGG with batch norm, CIFAR variants (vgg8/11/13/16/19) as in the CRD/mdistiller model zoo.

Five conv stages ``block0..block4``; each is a ``Sequential`` of conv-bn-relu whose *last* ReLU is
left out, so a tap on ``"block3"`` is the pre-activation (BN output) of that stage. Between stages:
``pool0..pool3`` (2×2 max pooling; ``pool3`` only when the map is still ≥ 8 wide, i.e. for 64×64
inputs, as in the reference), then ``pool4`` (adaptive average) and ``classifier``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS
from .init import he_init

CFGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _stage(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])  # the stage ends at its BN; forward applies the ReLU


class VGG(nn.Module):
    """VGG-BN over stages ``cfg`` (list of five lists of conv widths)."""

    def __init__(self, cfg: list[list[int]], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if len(cfg) != 5:
            raise ValueError(f"VGG cfg needs 5 stages of conv widths, got {len(cfg)}")
        prev = [in_channels] + [stage[-1] for stage in cfg[:-1]]
        self.block0 = _stage(cfg[0], prev[0])
        self.block1 = _stage(cfg[1], prev[1])
        self.block2 = _stage(cfg[2], prev[2])
        self.block3 = _stage(cfg[3], prev[3])
        self.block4 = _stage(cfg[4], prev[4])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if x.shape[-1] >= 8:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


@MODELS.register("vgg8")
def vgg8(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-8 with BN."""
    return VGG(CFGS["vgg8"], num_classes=num_classes, in_channels=in_channels)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-11 with BN."""
    return VGG(CFGS["vgg11"], num_classes=num_classes, in_channels=in_channels)


@MODELS.register("vgg13")
def vgg13(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-13 with BN."""
    return VGG(CFGS["vgg13"], num_classes=num_classes, in_channels=in_channels)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-16 with BN."""
    return VGG(CFGS["vgg16"], num_classes=num_classes, in_channels=in_channels)


@MODELS.register("vgg19")
def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    """VGG-19 with BN."""
    return VGG(CFGS["vgg19"], num_classes=num_classes, in_channels=in_channels)


__all__ = ["CFGS", "VGG", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]
