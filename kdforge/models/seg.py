"""Small segmentation nets for 1-channel scenes: DeepLabV3+-style and a tiny U-Net.

Every model maps ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)`` (H, W divisible by
16) and exposes tappable submodules:

* ``backbone.stem``, ``backbone.stage1`` … ``backbone.stage4`` (strides 2, 4, 8, 8 for DeepLab —
  stage4 is dilated, output stride 8 — and 2, 4, 8, 16 for the U-Net),
* ``aspp`` (DeepLab only), ``decoder``, ``classifier`` (the last 1×1 conv, before upsampling).

The backbones (:class:`ResNetBackbone`, :class:`MobileNetV2Backbone`) are reused by
:mod:`kdforge.models.det`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation,
                                         groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def sep_conv_bn(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Atrous separable convolution (DeepLabV3+): depthwise 3×3 (dilated) + BN + ReLU, pointwise 1×1 + BN + ReLU."""
    return nn.Sequential(conv_bn(cin, cin, 3, dilation=dilation, groups=cin), conv_bn(cin, cout, 1))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs, identity or 1×1 projection shortcut)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, dilation)
        self.conv2 = conv_bn(cout, cout, 3, 1, dilation, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn(cin, cout, 1, stride, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand → 3×3 depthwise → 1×1 linear projection (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride, dilation, groups=mid),
                                  conv_bn(mid, cout, 1, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return x + y if self.use_res else y


def _stage(block: type[nn.Module], cin: int, cout: int, depth: int, stride: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(*[block(cin if i == 0 else cout, cout, stride if i == 0 else 1, dilation)
                           for i in range(depth)])


class _Backbone(nn.Module):
    """stem (3×3, stride 1) → stage1..stage4; ``forward`` returns the four stage outputs."""

    block: type[nn.Module] = BasicBlock

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), depths: Sequence[int] = (1, 1, 1, 1),
                 in_channels: int = 1, strides: Sequence[int] = (2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1), stem_width: int | None = None) -> None:
        super().__init__()
        if not (len(widths) == len(depths) == len(strides) == len(dilations) == 4):
            raise ValueError("backbone: widths, depths, strides and dilations need 4 entries each")
        stem = stem_width or widths[0]
        self.stem = conv_bn(in_channels, stem, 3)
        cin = stem
        for i in range(4):
            setattr(self, f"stage{i + 1}", _stage(self.block, cin, widths[i], depths[i], strides[i], dilations[i]))
            cin = widths[i]
        self.widths = tuple(widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            feats.append(x)
        return feats


class ResNetBackbone(_Backbone):
    """ResNet-style backbone of :class:`BasicBlock` stages."""

    block = BasicBlock


class MobileNetV2Backbone(_Backbone):
    """MobileNetV2-style backbone of :class:`InvertedResidual` stages (expansion 4)."""

    block = InvertedResidual


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1 branch, separable 3×3 branches at ``rates``, image pooling → 1×1 fuse."""

    def __init__(self, cin: int, cout: int, rates: Sequence[int] = (2, 4, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn(cin, cout, 1)] + [sep_conv_bn(cin, cout, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = conv_bn(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[2:]))
        return self.project(torch.cat(outs, 1))


class DeepLabDecoder(nn.Module):
    """DeepLabV3+ decoder: upsample ASPP features to the low-level skip, concat its 1×1 reduction, two
    separable 3×3 convs."""

    def __init__(self, c_high: int, c_low: int, c_reduce: int, cout: int) -> None:
        super().__init__()
        self.reduce = conv_bn(c_low, c_reduce, 1)
        self.fuse = nn.Sequential(sep_conv_bn(c_high + c_reduce, cout), sep_conv_bn(cout, cout))

    def forward(self, high: Tensor, low: Tensor) -> Tensor:
        high = F.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([high, self.reduce(low)], 1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al., ECCV 2018) scaled down: backbone at output stride 8 (stage4 dilated),
    ASPP, decoder with the stride-4 ``stage2`` skip, 1×1 classifier, bilinear upsampling to the input."""

    def __init__(self, backbone: _Backbone, num_classes: int = 11, aspp_channels: int = 64,
                 decoder_channels: int = 64, rates: Sequence[int] = (2, 4, 6)) -> None:
        super().__init__()
        self.backbone = backbone
        w = backbone.widths
        self.aspp = ASPP(w[3], aspp_channels, rates)
        self.decoder = DeepLabDecoder(aspp_channels, w[1], max(8, decoder_channels // 4), decoder_channels)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, low, _, high = self.backbone(x)
        y = self.classifier(self.decoder(self.aspp(high), low))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


_DILATED = dict(strides=(2, 2, 2, 1), dilations=(1, 1, 1, 2))


@MODELS.register("deeplabv3p_res_t")
def deeplabv3p_res_t(num_classes: int = 11, in_channels: int = 1) -> DeepLabV3Plus:
    """Teacher: ResNet-style backbone, widths 32-64-128-256, 2 blocks per stage; ASPP/decoder 128."""
    bb = ResNetBackbone((32, 64, 128, 256), (2, 2, 2, 2), in_channels, **_DILATED)
    return DeepLabV3Plus(bb, num_classes, aspp_channels=128, decoder_channels=128)


@MODELS.register("deeplabv3p_res_s")
def deeplabv3p_res_s(num_classes: int = 11, in_channels: int = 1) -> DeepLabV3Plus:
    """Student: ResNet-style backbone, widths 16-32-64-128, 1 block per stage; ASPP/decoder 64."""
    bb = ResNetBackbone((16, 32, 64, 128), (1, 1, 1, 1), in_channels, **_DILATED)
    return DeepLabV3Plus(bb, num_classes, aspp_channels=64, decoder_channels=64)


@MODELS.register("deeplabv3p_mbv2_s")
def deeplabv3p_mbv2_s(num_classes: int = 11, in_channels: int = 1) -> DeepLabV3Plus:
    """Student: MobileNetV2-style backbone (inverted residuals, ×4), widths 16-24-32-64, depths 1-2-2-2."""
    bb = MobileNetV2Backbone((16, 24, 32, 64), (1, 2, 2, 2), in_channels, stem_width=16, **_DILATED)
    return DeepLabV3Plus(bb, num_classes, aspp_channels=64, decoder_channels=64)


class UNetDecoder(nn.Module):
    """U-Net expanding path: at each level upsample ×2, concat the skip, two 3×3 convs."""

    def __init__(self, widths: Sequence[int], stem: int) -> None:
        super().__init__()
        skips = [stem, *widths[:-1]]  # skip widths for levels 0..3 (stem is at full resolution)
        self.up = nn.ModuleList()
        cin = widths[-1]
        for c_skip in reversed(skips):
            self.up.append(nn.Sequential(conv_bn(cin + c_skip, c_skip, 3), conv_bn(c_skip, c_skip, 3)))
            cin = c_skip

    def forward(self, feats: list[Tensor]) -> Tensor:
        x = feats[-1]
        for block, skip in zip(self.up, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return x


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015), tiny: 4 downsampling stages, bilinear up + concat."""

    def __init__(self, num_classes: int = 11, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.backbone = ResNetBackbone(widths, (1, 1, 1, 1), in_channels, stem_width=widths[0] // 2)
        self.decoder = UNetDecoder(widths, widths[0] // 2)
        self.classifier = nn.Conv2d(widths[0] // 2, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        stem = self.backbone.stem(x)
        feats = [stem]
        h = stem
        for i in range(1, 5):
            h = getattr(self.backbone, f"stage{i}")(h)
            feats.append(h)
        return self.classifier(self.decoder(feats))


@MODELS.register("unet_tiny")
def unet_tiny(num_classes: int = 11, in_channels: int = 1) -> UNet:
    """Tiny U-Net: encoder widths 16-32-64-128 (ResNet basic blocks), stem 8, mirrored decoder."""
    return UNet(num_classes, in_channels)


__all__ = ["ResNetBackbone", "MobileNetV2Backbone", "ASPP", "DeepLabV3Plus", "UNet", "deeplabv3p_res_t",
           "deeplabv3p_res_s", "deeplabv3p_mbv2_s", "unet_tiny"]
