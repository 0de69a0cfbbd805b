"""Detector distillation: fine-grained imitation, FGD, PKD, objectness-scaled and heatmap head distillation.

Box-aware losses read from ``ctx`` (the detection task's ``loss_context`` supplies them):

* ``boxes``: list (one entry per image) of ``(k, 4)`` xyxy boxes in **input pixels**;
* ``image_size``: ``(H, W)`` of the input images (feature strides are ``image_size / feature size``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_rank, check_same_shape, check_temperature


def _boxes_ctx(ctx: dict[str, Any], x: Tensor, loss: str) -> tuple[list[Tensor], tuple[float, float]]:
    boxes, size = ctx.get("boxes"), ctx.get("image_size")
    if boxes is None or size is None:
        raise ValueError(f"{loss}: needs ctx 'boxes' (list of (k,4) xyxy input-pixel boxes per image) and "
                         f"'image_size' (H, W); the detection task's loss_context() provides both")
    if len(boxes) != x.shape[0]:
        raise ValueError(f"{loss}: {len(boxes)} box lists for a batch of {x.shape[0]}")
    return [b.to(x.device).float().reshape(-1, 4) for b in boxes], (float(size[0]), float(size[1]))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix of xyxy boxes ``a`` (M,4) and ``b`` (K,4)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda z: (z[:, 2] - z[:, 0]).clamp(min=0) * (z[:, 3] - z[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter).clamp(min=1e-9)


def imitation_mask(boxes: Sequence[Tensor], feat_hw: tuple[int, int], image_size: tuple[float, float],
                   anchor_sizes: Sequence[float], anchor_ratios: Sequence[float], thresh: float) -> Tensor:
    """Fine-grained imitation region (N,H,W): locations with an anchor whose IoU with a ground-truth box
    exceeds ``thresh`` × that box's best anchor IoU (Wang et al. 2019, ψ = ``thresh``)."""
    h, w = feat_hw
    sy, sx = image_size[0] / h, image_size[1] / w
    dev = boxes[0].device if len(boxes) else torch.device("cpu")
    cy, cx = torch.meshgrid((torch.arange(h, device=dev) + 0.5) * sy, (torch.arange(w, device=dev) + 0.5) * sx,
                            indexing="ij")
    shapes = torch.tensor([(s * math.sqrt(r), s / math.sqrt(r)) for s in anchor_sizes for r in anchor_ratios],
                          device=dev)  # (A, 2) = (height, width), aspect ratio r = h / w
    ah, aw = shapes[:, 0].view(1, 1, -1), shapes[:, 1].view(1, 1, -1)
    anchors = torch.stack([cx[..., None] - aw / 2, cy[..., None] - ah / 2,
                           cx[..., None] + aw / 2, cy[..., None] + ah / 2], -1).view(-1, 4)  # (h*w*A, 4)
    masks = torch.zeros(len(boxes), h, w, device=dev)
    for i, b in enumerate(boxes):
        if len(b) == 0:
            continue
        iou = box_iou(anchors, b)  # (h*w*A, k)
        pos = (iou > thresh * iou.max(0, keepdim=True).values) & (iou > 0)
        masks[i] = pos.any(1).view(h, w, -1).any(-1).float()
    return masks


@LOSSES.register("fine_grained")
class FineGrainedLoss(DistillLoss):
    r"""Fine-grained feature imitation (Wang, Yuan, Zhang & Feng, *Distilling Object Detectors with
    Fine-grained Feature Imitation*, CVPR 2019).

    .. math:: \mathcal{L}_{imit} = \frac{1}{2N_p}\sum_{i,j} I_{ij}\sum_c \big(f_{adap}(s)_{c,i,j} - t_{c,i,j}\big)^2

    :math:`I` is the imitation mask — locations with an anchor whose IoU with some ground-truth box is
    above ψ·(that box's largest anchor IoU), ψ=0.5 — and :math:`N_p=\sum I`; the ``2N_p`` normaliser
    follows the official code. :math:`f_{adap}` is the job's connector (the paper's adaptation layer:
    ``conv1x1`` or ``conv3x3_bn``). The paper's anchors are Faster R-CNN's; here they are set for the
    64-px scenes: sizes 16/32/64 px × ratios 0.5/1/2 (override ``anchor_sizes``/``anchor_ratios``).
    A precomputed ``ctx["imitation_mask"]`` (N,H,W) is used as is. The imitation weight λ is the job
    weight; we recall λ=0.01 from the paper but did not confirm it against the official code — tune it.
    """

    def __init__(self, thresh: float = 0.5, anchor_sizes: Sequence[float] = (16, 32, 64),
                 anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> None:
        super().__init__()
        if not 0 < thresh <= 1:
            raise ValueError(f"fine_grained: thresh (ψ) must be in (0, 1], got {thresh}")
        self.thresh, self.anchor_sizes, self.anchor_ratios = thresh, tuple(anchor_sizes), tuple(anchor_ratios)

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        check_rank(student, (4,), "student feature", "fine_grained")
        check_same_shape(student, teacher, "fine_grained")
        mask = ctx.get("imitation_mask")
        if mask is None:
            boxes, size = _boxes_ctx(ctx, student, "fine_grained")
            mask = imitation_mask(boxes, tuple(student.shape[2:]), size, self.anchor_sizes, self.anchor_ratios,
                                  self.thresh)
        if mask.shape != (student.shape[0], *student.shape[2:]):
            raise ShapeMismatchError(f"fine_grained: imitation mask {tuple(mask.shape)} does not fit feature "
                                     f"{tuple(student.shape)}")
        mask = mask.to(student.dtype)
        diff = ((student - teacher) ** 2 * mask[:, None]).sum()
        return diff / (2 * mask.sum()).clamp(min=1)


class _LazyChannelLayerNorm(nn.modules.lazy.LazyModuleMixin, nn.Module):
    """``nn.LayerNorm([C, 1, 1])`` with ``C`` read from the first input."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.UninitializedParameter()
        self.bias = nn.UninitializedParameter()

    def initialize_parameters(self, x: Tensor) -> None:  # type: ignore[override]
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize((x.shape[1], 1, 1))
                self.bias.materialize((x.shape[1], 1, 1))
                self.weight.fill_(1.0)
                self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, tuple(x.shape[1:]), self.weight, self.bias)


class _GcContext(nn.Module):
    """GcBlock (Cao et al. 2019) as used by FGD: softmax attention pooling → bottleneck transform."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_mask = nn.LazyConv2d(1, 1)
        self.transform = nn.Sequential(nn.LazyConv2d(0, 1), _LazyChannelLayerNorm(), nn.ReLU(inplace=True),
                                       nn.LazyConv2d(0, 1))
        self._ready = False

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if not self._ready:  # widths from the first input, then FGD's init (mmcv kaiming fan_in, zero last conv)
            self.transform[0].out_channels, self.transform[3].out_channels = c // 2, c
            self.transform(self.conv_mask(x[:1]).new_zeros(1, c, 1, 1))
            with torch.no_grad():
                nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(self.conv_mask.bias)
                nn.init.zeros_(self.transform[3].weight)
                nn.init.zeros_(self.transform[3].bias)
            self._ready = True
        attn = F.softmax(self.conv_mask(x).view(n, 1, h * w), dim=2)  # (N,1,HW)
        context = torch.bmm(x.view(n, c, h * w), attn.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)


def fgd_attention(x: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """FGD's spatial (N,H,W) and channel (N,C) attention: ``HW·softmax(mean_c|x|/T)``, ``C·softmax(mean_hw|x|/T)``."""
    n, c, h, w = x.shape
    a = x.abs()
    spatial = h * w * F.softmax((a.mean(1) / temp).view(n, -1), dim=1).view(n, h, w)
    channel = c * F.softmax(a.mean((2, 3)) / temp, dim=1)
    return spatial, channel


def fgd_masks(boxes: Sequence[Tensor], feat_hw: tuple[int, int], image_size: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """FGD's foreground scale mask (1/box area in feature cells, max over overlapping boxes) and its
    background mask (1/N_bg on cells outside every box), as in the official code."""
    h, w = feat_hw
    dev = boxes[0].device if len(boxes) else torch.device("cpu")
    fg = torch.zeros(len(boxes), h, w, device=dev)
    for i, b in enumerate(boxes):
        for x1, y1, x2, y2 in b.tolist():
            wmin, wmax = math.floor(x1 / image_size[1] * w), math.ceil(x2 / image_size[1] * w)
            hmin, hmax = math.floor(y1 / image_size[0] * h), math.ceil(y2 / image_size[0] * h)
            area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
            region = fg[i, hmin:hmax + 1, wmin:wmax + 1]
            region.clamp_(min=area)
    bg = (fg == 0).float()
    bg = bg / bg.sum((1, 2), keepdim=True).clamp(min=1)
    return fg, bg


@LOSSES.register("fgd")
class FGDLoss(DistillLoss):
    r"""Focal and Global Distillation (Yang et al., *Focal and Global Knowledge Distillation for
    Detectors*, CVPR 2022).

    .. math:: \mathcal{L} = \alpha L_{fg} + \beta L_{bg} + \gamma L_{at} + \lambda L_{global}

    * focal: :math:`L_{fg}=\sum M^{fg}_{ij} A^S_{ij} A^C_k (t_{kij}-s_{kij})^2` (and :math:`L_{bg}` with
      the background mask), with the *teacher's* attentions :math:`A^S = HW\,\mathrm{softmax}(\overline{|t|}_c/T)`,
      :math:`A^C = C\,\mathrm{softmax}(\overline{|t|}_{hw}/T)`, :math:`M^{fg}` = 1/(box area in cells),
      :math:`M^{bg}` = 1/N_bg; :math:`L_{at} = \sum|A^S_s - A^S_t| + \sum|A^C_s - A^C_t|`;
    * global: :math:`L_{global} = \sum (\mathcal{R}(s) - \mathcal{R}(t))^2` with :math:`\mathcal{R}` a
      GcBlock (one for each side, learnable parameters held by this loss).

    All sums are divided by the batch size, as in the official code. Defaults are the official RetinaNet
    (and GFL/FCOS) configs: ``temp=0.5, alpha=1e-3, beta=5e-4, gamma=5e-4, lambda_=5e-6`` (the code's
    class default for gamma is 1e-3). Channel mismatch: the job's connector plays the official ``align``
    1×1 conv (``connector: conv1x1``). Needs ``ctx["boxes"]`` and ``ctx["image_size"]``.
    """

    def __init__(self, temp: float = 0.5, alpha: float = 1e-3, beta: float = 5e-4, gamma: float = 5e-4,
                 lambda_: float = 5e-6) -> None:
        super().__init__()
        check_temperature(temp, "temp", "fgd")
        self.temp, self.alpha, self.beta, self.gamma, self.lambda_ = temp, alpha, beta, gamma, lambda_
        self.gc_student, self.gc_teacher = _GcContext(), _GcContext()

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        check_rank(student, (4,), "student feature", "fgd")
        check_same_shape(student, teacher, "fgd")
        boxes, size = _boxes_ctx(ctx, student, "fgd")
        n = student.shape[0]
        s, t = student.float(), teacher.float()
        sa_t, ca_t = fgd_attention(t, self.temp)
        sa_s, ca_s = fgd_attention(s, self.temp)
        fg, bg = fgd_masks(boxes, tuple(s.shape[2:]), size)
        w = (t - s) ** 2 * sa_t[:, None] * ca_t[:, :, None, None]
        fg_loss = (w * fg[:, None]).sum() / n
        bg_loss = (w * bg[:, None]).sum() / n
        mask_loss = ((ca_s - ca_t).abs().sum() + (sa_s - sa_t).abs().sum()) / n
        rela_loss = ((self.gc_student(s) - self.gc_teacher(t)) ** 2).sum() / n
        return self.alpha * fg_loss + self.beta * bg_loss + self.gamma * mask_loss + self.lambda_ * rela_loss

    def extra_repr(self) -> str:
        return f"temp={self.temp}, alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, lambda_={self.lambda_}"


@LOSSES.register("objectness_kd")
class ObjectnessKDLoss(DistillLoss):
    r"""Objectness-scaled head distillation (Mehta & Ozturk, *Object detection at 200 Frames Per
    Second*, ECCV-W 2018), adapted from YOLOv2 to CenterNet heads.

    The paper distils the objectness with :math:`f_{obj}(o^T, \hat o)` and scales the class and box
    distillation terms by the teacher's objectness :math:`o^T`, so that the student only imitates the
    teacher's boxes where the teacher sees an object. With CenterNet heads (taps, in this order:
    ``head.heatmap``, ``head.wh``, ``head.offset``; ``pairwise=False``):

    .. math:: \mathcal{L} = \frac{1}{NHW}\sum_{n,k,i,j}\big(\sigma(h^S)-\sigma(h^T)\big)^2
              + \frac{\sum o^T\,(w_{wh}\,|wh^S-wh^T|_1 + w_{off}\,|off^S-off^T|_1)}{\sum o^T},
              \qquad o^T_{nij} = \max_k \sigma(h^T_{nkij})

    The heatmap term is the objectness *and* class term (CenterNet's heatmap is per class); it uses
    the paper's L2. Box terms use CenterNet's own L1 and weights (``wh_weight=0.1, offset_weight=1``).
    The paper's :math:`\lambda_D` is the job weight (1 in the paper).
    """

    pairwise = False
    same_shape = False

    def __init__(self, wh_weight: float = 0.1, offset_weight: float = 1.0) -> None:
        super().__init__()
        self.wh_weight, self.offset_weight = wh_weight, offset_weight

    def forward(self, student: list[Tensor], teacher: list[Tensor], **ctx: Any) -> Tensor:
        if not isinstance(student, (list, tuple)) or len(student) != 3 or len(teacher) != 3:
            raise ValueError("objectness_kd: tap [heatmap, wh, offset] on both models (3 taps each, in that order)")
        for name, s, t in zip(("heatmap", "wh", "offset"), student, teacher):
            check_rank(s, (4,), f"student {name}", "objectness_kd")
            check_same_shape(s, t, f"objectness_kd ({name})")
        (hs, whs, offs), (ht, wht, offt) = student, teacher
        if whs.shape[1] != 2 or offs.shape[1] != 2 or hs.shape[2:] != whs.shape[2:]:
            raise ShapeMismatchError(f"objectness_kd: expected heatmap (N,K,H,W), wh and offset (N,2,H,W); got "
                                     f"{tuple(hs.shape)}, {tuple(whs.shape)}, {tuple(offs.shape)}")
        pt = torch.sigmoid(ht.float())
        hm = ((torch.sigmoid(hs.float()) - pt) ** 2).sum(1).mean()
        obj = pt.max(1, keepdim=True).values  # (N,1,H,W) teacher objectness
        box = (self.wh_weight * (whs.float() - wht.float()).abs() + self.offset_weight * (offs.float() - offt.float()).abs())
        return hm + (obj * box).sum() / obj.sum().clamp(min=1e-6)

    def extra_repr(self) -> str:
        return f"wh_weight={self.wh_weight}, offset_weight={self.offset_weight}"


@LOSSES.register("pkd")
class PKDLoss(DistillLoss):
    r"""PKD: feature imitation through the Pearson correlation coefficient (Cao, Xu, Li, Wu, Shan & Chen,
    *PKD: General Distillation Framework for Object Detectors via Pearson Correlation Coefficient*,
    NeurIPS 2022).

    Each channel of both feature maps is standardised over the batch and the spatial positions,
    :math:`\hat f_c = (f_c - \mu_c) / (\sigma_c + 10^{-6})` with :math:`\mu_c, \sigma_c` the mean and
    (unbiased) standard deviation of channel :math:`c` over :math:`(N, H, W)`; then

    .. math:: \mathcal{L}_{PKD} = \frac{1}{2\,NCHW}\sum_{n,c,h,w}\big(\hat s_{nchw} - \hat t_{nchw}\big)^2

    which, per channel, is :math:`1 - r` with :math:`r` the Pearson correlation of student and teacher
    (up to the :math:`(M-1)/M` factor of the unbiased std). Magnitude differences between the two FPNs no
    longer matter, only their correlation, which is why PKD works across heterogeneous detectors. As in
    the official code (MMRazor ``PKDLoss``), a student map of another spatial size is resized bilinearly
    to the teacher's (``resize_stu=False`` resizes the teacher instead); a channel mismatch needs the job's
    connector (``conv1x1``). The official detection configs put one PKD term on every FPN level with
    weight 6 (Faster R-CNN, also the default in MMRazor's README) or 10 (RetinaNet): that is the job weight.
    """

    def __init__(self, resize_stu: bool = True) -> None:
        super().__init__()
        self.resize_stu = resize_stu

    @staticmethod
    def standardise(f: Tensor) -> Tensor:
        """Per-channel standardisation over (N, H, W), as PKD's ``norm``."""
        x = f.transpose(0, 1).reshape(f.shape[1], -1)
        x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
        return x.reshape(f.shape[1], f.shape[0], *f.shape[2:]).transpose(0, 1)

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        check_rank(student, (4,), "student feature", "pkd")
        check_rank(teacher, (4,), "teacher feature", "pkd")
        if student.shape[1] != teacher.shape[1]:
            raise ShapeMismatchError(f"pkd: student has {student.shape[1]} channels, teacher {teacher.shape[1]}; "
                                     f"add `connector: conv1x1` to the job to map the student's channels")
        s, t = student.float(), teacher.float()
        if s.shape[2:] != t.shape[2:]:
            if self.resize_stu:
                s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
            else:
                t = F.interpolate(t, size=s.shape[2:], mode="bilinear", align_corners=False)
        return F.mse_loss(self.standardise(s), self.standardise(t)) / 2

    def extra_repr(self) -> str:
        return f"resize_stu={self.resize_stu}"


def heatmap_peaks(prob: Tensor, thresh: float) -> Tensor:
    """(N,1,H,W) mask of the locations CenterNet's decoder would read: the class-max probability is a 3×3
    local maximum and at least ``thresh``."""
    obj = prob.max(1, keepdim=True).values
    return ((F.max_pool2d(obj, 3, stride=1, padding=1) == obj) & (obj >= thresh)).to(prob.dtype)


@LOSSES.register("heatmap_kd")
class HeatmapKDLoss(DistillLoss):
    r"""Response distillation for CenterNet-style heads: a focal-weighted soft-target loss on the centre
    heatmaps, and box regression distilled where the teacher is confident.

    Heatmap term — the Quality Focal Loss of Li et al. (*Generalized Focal Loss*, NeurIPS 2020) with the
    teacher's probability :math:`q=\sigma(h^T)` as the soft target for :math:`p=\sigma(h^S)`:

    .. math:: \mathcal{L}_{hm} = \frac{1}{M}\sum_{n,k,i,j}|q-p|^{\beta}\,
              \mathrm{BCE}(p, q),\qquad \mathrm{BCE}(p,q) = -q\log p-(1-q)\log(1-p)

    The modulating factor :math:`|q-p|^\beta` (β=2, GFL's default) is the focal weighting the dense
    detection-distillation literature uses to stop the vast, easy background from swamping the few object
    locations (cf. the adaptive distillation loss of Tang et al., 2019); :math:`M` is the number of
    ground-truth objects in the batch (``ctx["boxes"]``), the normaliser of CenterNet's own focal loss, so
    the term is on the scale of the task's heatmap loss (without boxes in ``ctx``: the number of teacher
    peaks). Box term — at the teacher's peaks :math:`P` (class-max probability a 3×3 local maximum and
    ≥ ``conf_thresh``, i.e. where the teacher's decoder would read a box), weighted by the teacher's
    confidence :math:`w=\max_k q`:

    .. math:: \mathcal{L}_{box} = \frac{\sum_{P} w\,(\lambda_{wh}|wh^S-wh^T|_1 + \lambda_{off}|o^S-o^T|_1)}{\sum_P w}

    with CenterNet's own weights (λ_wh=0.1, λ_off=1). Taps: ``[head.heatmap, head.wh, head.offset]`` on
    both models (``pairwise=False``), or ``head.heatmap`` alone for the heatmap term only.
    """

    pairwise = False
    same_shape = False

    def __init__(self, beta: float = 2.0, conf_thresh: float = 0.3, wh_weight: float = 0.1,
                 offset_weight: float = 1.0) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"heatmap_kd: beta must be >= 0, got {beta}")
        if not 0 <= conf_thresh < 1:
            raise ValueError(f"heatmap_kd: conf_thresh must be in [0, 1), got {conf_thresh}")
        self.beta, self.conf_thresh, self.wh_weight, self.offset_weight = beta, conf_thresh, wh_weight, offset_weight

    def forward(self, student: Tensor | list[Tensor], teacher: Tensor | list[Tensor], **ctx: Any) -> Tensor:
        single = isinstance(student, Tensor)
        if single != isinstance(teacher, Tensor) or (not single and (len(student) != 3 or len(teacher) != 3)):
            raise ValueError("heatmap_kd: tap head.heatmap on both models, or [head.heatmap, head.wh, head.offset] "
                             "on both (3 taps each, in that order)")
        hs, ht = (student, teacher) if single else (student[0], teacher[0])
        check_rank(hs, (4,), "student heatmap", "heatmap_kd")
        check_same_shape(hs, ht, "heatmap_kd (heatmap)")
        q = torch.sigmoid(ht.float())
        logit = hs.float()
        p = torch.sigmoid(logit)
        bce = F.binary_cross_entropy_with_logits(logit, q, reduction="none")
        hm = ((q - p).abs() ** self.beta * bce).sum()
        if ctx.get("boxes") is not None:
            m = sum(len(b) for b in ctx["boxes"])
        else:
            m = heatmap_peaks(q, self.conf_thresh).sum()
        loss = hm / max(float(m), 1.0)
        if single:
            return loss
        for name, s, t in zip(("wh", "offset"), student[1:], teacher[1:]):
            check_same_shape(s, t, f"heatmap_kd ({name})")
            if s.shape[0] != hs.shape[0] or s.shape[2:] != hs.shape[2:]:
                raise ShapeMismatchError(f"heatmap_kd: {name} {tuple(s.shape)} does not match heatmap "
                                         f"{tuple(hs.shape)} (expected (N,2,H,W))")
        w = heatmap_peaks(q, self.conf_thresh) * q.max(1, keepdim=True).values  # (N,1,H,W)
        box = (self.wh_weight * (student[1].float() - teacher[1].float()).abs()
               + self.offset_weight * (student[2].float() - teacher[2].float()).abs())
        return loss + (w * box).sum() / w.sum().clamp(min=1e-6)

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, conf_thresh={self.conf_thresh}, wh_weight={self.wh_weight}, "
                f"offset_weight={self.offset_weight}")
