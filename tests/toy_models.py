"""Small models for the core tests (importable as ``toy_models:NAME`` by build_model)."""
from __future__ import annotations

import torch
from torch import nn

from kdforge.capture import emit


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.short(x))


class TinyResNet(nn.Module):
    """ResNet-shaped: conv1/bn1/relu, layer1..layer3 of Blocks, avgpool, fc; emits '@embed'."""

    def __init__(self, width: int = 4, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Block(w, w), Block(w, w))
        self.layer2 = nn.Sequential(Block(w, 2 * w, 2), Block(2 * w, 2 * w))
        self.layer3 = nn.Sequential(Block(2 * w, 4 * w, 2), Block(4 * w, 4 * w))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(emit("embed", f * 2.0))


def tiny_resnet(width: int = 4, num_classes: int = 10, in_channels: int = 1) -> TinyResNet:
    return TinyResNet(width, num_classes, in_channels)


class YoloLike(nn.Module):
    """Modules under ``model.<int>`` like YOLO's ``model.77``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(*[nn.Conv2d(2, 2, 1) for _ in range(80)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
