"""A small CenterNet detector (Zhou et al., *Objects as Points*, 2019) with an FPN-style neck.

``forward(x)`` returns the raw head outputs ``{"heatmap": (N,K,H/4,W/4) logits, "wh": (N,2,·,·) box
width/height in input pixels, "offset": (N,2,·,·) sub-cell centre offset}``; :meth:`CenterNet.decode`
(or :func:`centernet_decode`) turns them into ``[{"boxes" xyxy, "scores", "labels"}]`` per image, and
:func:`centernet_loss` is the training loss (focal heatmap loss + L1 size ×0.1 + L1 offset ×1).

Tappable modules: ``backbone.stem``, ``backbone.stage1..4`` (strides 2, 4, 8, 16), ``neck.p2``,
``neck.p3``, ``neck.p4`` (FPN outputs at strides 4, 8, 16; the head reads ``neck.p2``),
``head.heatmap``, ``head.wh``, ``head.offset``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import MODELS
from .seg import ResNetBackbone, conv_bn

STRIDE = 4


class FPNNeck(nn.Module):
    """Top-down FPN over backbone stages 2–4: 1×1 laterals, nearest upsampling + sum, 3×3 output convs."""

    def __init__(self, in_widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_widths)
        self.p2, self.p3, self.p4 = (conv_bn(width, width, 3) for _ in range(3))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        c2, c3, c4 = feats
        l4 = self.lateral[2](c4)
        l3 = self.lateral[1](c3) + F.interpolate(l4, size=c3.shape[2:], mode="nearest")
        l2 = self.lateral[0](c2) + F.interpolate(l3, size=c2.shape[2:], mode="nearest")
        return [self.p2(l2), self.p3(l3), self.p4(l4)]


def _head(cin: int, mid: int, cout: int, bias: float = 0.0) -> nn.Sequential:
    last = nn.Conv2d(mid, cout, 1)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True), last)


class CenterNetHead(nn.Module):
    def __init__(self, cin: int, num_classes: int, mid: int) -> None:
        super().__init__()
        self.heatmap = _head(cin, mid, num_classes, bias=-2.19)  # σ(-2.19) ≈ 0.1, CenterNet's init
        self.wh = _head(cin, mid, 2)
        self.offset = _head(cin, mid, 2)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"heatmap": self.heatmap(x), "wh": self.wh(x), "offset": self.offset(x)}


class CenterNet(nn.Module):
    """Backbone → FPN neck → CenterNet head on the stride-4 level ``p2``."""

    stride = STRIDE

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: Sequence[int] = (16, 32, 64, 128),
                 depths: Sequence[int] = (1, 1, 1, 1), neck_width: int = 64, head_width: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = ResNetBackbone(widths, depths, in_channels)
        self.neck = FPNNeck(widths[1:], neck_width)
        self.head = CenterNetHead(neck_width, num_classes, head_width)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"CenterNet: input height and width must be multiples of 16, got {tuple(x.shape)}")
        feats = self.backbone(x)
        return self.head(self.neck(feats[1:])[0])

    def decode(self, outputs: dict[str, Tensor], score_thresh: float = 0.05, topk: int = 100) -> list[dict[str, Tensor]]:
        return centernet_decode(outputs, score_thresh, topk, self.stride)


@MODELS.register("centernet_t")
def centernet_t(num_classes: int = 10, in_channels: int = 1) -> CenterNet:
    """Teacher: ResNet-style backbone 32-64-128-256, 2 blocks per stage; neck/head width 128."""
    return CenterNet(num_classes, in_channels, (32, 64, 128, 256), (2, 2, 2, 2), 128, 128)


@MODELS.register("centernet_s")
def centernet_s(num_classes: int = 10, in_channels: int = 1) -> CenterNet:
    """Student: ResNet-style backbone 16-32-64-128, 1 block per stage; neck/head width 64."""
    return CenterNet(num_classes, in_channels, (16, 32, 64, 128), (1, 1, 1, 1), 64, 64)


# ------------------------------------------------------------------------------ targets and loss
def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (CornerNet's three cases) so that a box shifted by it keeps IoU ≥ ``min_overlap``."""
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(targets: Sequence[dict[str, Tensor]], num_classes: int, out_hw: tuple[int, int],
                      stride: int = STRIDE) -> dict[str, Tensor]:
    """Encode boxes (input pixels, xyxy) as CenterNet targets at the output resolution.

    Returns ``heatmap`` (N,K,H,W) Gaussian peaks, ``wh``/``offset`` (N,2,H,W) regression targets and
    ``reg_mask`` (N,H,W) 1 at object centres.
    """
    n, (H, W) = len(targets), out_hw
    dev = targets[0]["boxes"].device if n else torch.device("cpu")
    hm = torch.zeros(n, num_classes, H, W, device=dev)
    wh = torch.zeros(n, 2, H, W, device=dev)
    off = torch.zeros(n, 2, H, W, device=dev)
    mask = torch.zeros(n, H, W, device=dev)
    ys, xs = torch.arange(H, device=dev).view(-1, 1).float(), torch.arange(W, device=dev).view(1, -1).float()
    for i, t in enumerate(targets):
        for box, c in zip(t["boxes"].float().tolist(), t["labels"].tolist()):
            bw, bh = box[2] - box[0], box[3] - box[1]
            cx, cy = (box[0] + box[2]) / 2 / stride, (box[1] + box[3]) / 2 / stride
            ix, iy = min(int(cx), W - 1), min(int(cy), H - 1)
            r = max(0, int(gaussian_radius(bh / stride, bw / stride)))
            sigma = (2 * r + 1) / 6
            g = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
            g = torch.where(((xs - ix).abs() <= r) & ((ys - iy).abs() <= r), g, torch.zeros_like(g))
            hm[i, c] = torch.maximum(hm[i, c], g)
            wh[i, :, iy, ix] = torch.tensor([bw, bh], device=dev)
            off[i, :, iy, ix] = torch.tensor([cx - ix, cy - iy], device=dev)
            mask[i, iy, ix] = 1.0
    return {"heatmap": hm, "wh": wh, "offset": off, "reg_mask": mask}


def focal_heatmap_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss, normalised by the number of objects."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def centernet_loss(outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], wh_weight: float = 0.1,
                   offset_weight: float = 1.0) -> Tensor:
    """CenterNet's training loss: focal heatmap loss + ``wh_weight``·L1(size) + ``offset_weight``·L1(offset)."""
    hm = outputs["heatmap"]
    t = centernet_targets(targets, hm.shape[1], tuple(hm.shape[2:]))
    m = t["reg_mask"].unsqueeze(1)
    npos = m.sum().clamp(min=1)
    l_wh = ((outputs["wh"].float() - t["wh"]).abs() * m).sum() / npos
    l_off = ((outputs["offset"].float() - t["offset"]).abs() * m).sum() / npos
    return focal_heatmap_loss(hm, t["heatmap"]) + wh_weight * l_wh + offset_weight * l_off


def centernet_decode(outputs: dict[str, Tensor], score_thresh: float = 0.05, topk: int = 100,
                     stride: int = STRIDE) -> list[dict[str, Tensor]]:
    """Peaks of the heatmap (3×3 max-pool NMS), top-``topk`` per image above ``score_thresh`` → boxes
    ``xyxy`` in input pixels, ``scores`` and ``labels`` (0..K-1)."""
    outputs = {k: v.detach() for k, v in outputs.items()}
    hm = torch.sigmoid(outputs["heatmap"].float())
    n, k, H, W = hm.shape
    peaks = hm * (F.max_pool2d(hm, 3, stride=1, padding=1) == hm)
    scores, idx = peaks.reshape(n, -1).topk(min(topk, k * H * W))
    labels, pix = idx // (H * W), idx % (H * W)
    ys, xs = (pix // W).float(), (pix % W).float()
    wh = outputs["wh"].float().reshape(n, 2, -1)
    off = outputs["offset"].float().reshape(n, 2, -1)
    res = []
    for i in range(n):
        w, h = wh[i, 0, pix[i]].clamp(min=0), wh[i, 1, pix[i]].clamp(min=0)
        cx, cy = (xs[i] + off[i, 0, pix[i]]) * stride, (ys[i] + off[i, 1, pix[i]]) * stride
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        keep = scores[i] > score_thresh
        res.append({"boxes": boxes[keep], "scores": scores[i][keep], "labels": labels[i][keep]})
    return res


__all__ = ["CenterNet", "centernet_t", "centernet_s", "centernet_loss", "centernet_decode", "centernet_targets",
           "focal_heatmap_loss", "gaussian_radius"]
