"""MobileNetV2 (Sandler et al., 2018), the CIFAR variant from the CRD repository.

Registered as ``mobilenetv2`` with the KD papers' defaults (expansion ``T=6``, width ``0.5``; CRD's
``mobile_half``). Layout: ``conv1`` (3×3 stride-2 conv-bn-relu), ``blocks`` (a ``ModuleList`` of 7
stages, each a ``Sequential`` of ``InvertedResidual`` whose layers live in ``.conv``: pw 0-2, dw 3-5,
pw-linear 6-7), ``conv2`` (1×1 conv-bn-relu to 1280 channels), ``avgpool`` (adaptive),
``classifier`` (``Sequential(Linear)``). Tap e.g. ``"blocks.4.2.conv.7"`` for a BN before no ReLU.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import MODELS
from .init import he_init

# t (expansion), c (channels), n (repeats), s (stride of the first block); t=None means ``T``.
SETTINGS: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]


def _conv_bn(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1×1 expand, 3×3 depthwise, 1×1 linear projection; residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = inp * expand_ratio
        self.stride = stride
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2 with expansion ``T`` and ``width_mult``."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 0.5,
        T: int = 6,
    ) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTINGS:
            out = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out, s if i == 0 else 1, T if t is None else t))
                channels = out
            self.blocks.append(nn.Sequential(*stage))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(channels, self.last_channel, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.conv2(x)
        return self.classifier(self.avgpool(x).flatten(1))


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 0.5, T: int = 6) -> MobileNetV2:
    """CIFAR MobileNetV2; the defaults are the KD papers' ``MobileNetV2`` (T=6, width 0.5)."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult, T=T)


__all__ = ["InvertedResidual", "MobileNetV2", "SETTINGS", "mobilenetv2"]
