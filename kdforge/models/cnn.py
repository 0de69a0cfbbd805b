"""A plain configurable CNN (conv-BN-ReLU stages with max-pooling): cheap teachers and students for
28×28 images, sized by ``channels``. Tap points: ``stages.<i>`` (after ReLU+pool), ``stages.<i>.bn``
(pre-ReLU), ``fc``."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from ..registry import MODELS


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int, pool: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers[:-2])
        self.bn = layers[-2]
        self.relu = layers[-1]
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.body(x))))


class CNN(nn.Module):
    """``len(channels)`` stages; each but the last halves the resolution; global average pool; ``fc``."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1, num_classes: int = 10,
                 in_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if not channels:
            raise ValueError("cnn: channels must list at least one stage width, e.g. [16, 32, 64]")
        stages, cin = [], in_channels
        for i, c in enumerate(channels):
            stages.append(Stage(cin, c, convs_per_stage, pool=i < len(channels) - 1))
            cin = c
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.avgpool(self.stages(x)).flatten(1)))


@MODELS.register("cnn")
def cnn(channels: Sequence[int] = (32, 64, 128), convs_per_stage: int = 1, num_classes: int = 10,
        in_channels: int = 1, dropout: float = 0.0) -> CNN:
    """Plain CNN, e.g. teacher ``cnn(channels=[32, 64, 128], convs_per_stage=2)``, student ``cnn(channels=[8, 16, 32])``."""
    return CNN(channels, convs_per_stage, num_classes, in_channels, dropout)
