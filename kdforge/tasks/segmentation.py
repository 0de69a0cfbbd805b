"""Semantic segmentation task: batches ``(images (N,C,H,W), masks long (N,H,W))``, pixel-wise CE, mIoU."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import TASKS


class ConfusionMeter:
    """Accumulates a ``K×K`` confusion matrix (rows = ground truth, columns = prediction) over batches.

    ``compute()`` → ``mIoU`` (mean over classes whose union is non-zero, i.e. present in the ground
    truth or the predictions — mmseg's ``nanmean``), ``pixel_acc`` and ``mIoU_fg`` (classes ≥ 1 only).
    Pixels labelled ``ignore_index`` are skipped. ``state()`` is summable across ranks (``reduce = "sum"``).
    """

    reduce = "sum"

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        pred = outputs.argmax(1) if outputs.dim() == targets.dim() + 1 else outputs
        if pred.shape != targets.shape:
            raise ValueError(f"ConfusionMeter: predictions {tuple(pred.shape)} vs targets {tuple(targets.shape)}")
        keep = targets != self.ignore_index
        t, p = targets[keep].long().cpu(), pred[keep].long().cpu()
        if t.numel() and (t.max() >= self.num_classes or t.min() < 0):
            raise ValueError(f"ConfusionMeter: target class outside 0..{self.num_classes - 1}")
        k = self.num_classes
        self.cm += torch.bincount(t * k + p, minlength=k * k).view(k, k).double()

    def iou(self) -> Tensor:
        inter = self.cm.diag()
        union = self.cm.sum(0) + self.cm.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        total = self.cm.sum()
        return {"mIoU": float(iou.nanmean()) if total else 0.0,
                "mIoU_fg": float(iou[1:].nanmean()) if total else 0.0,
                "pixel_acc": float(self.cm.diag().sum() / total) if total else 0.0}

    def state(self) -> Tensor:
        return self.cm.flatten().clone()

    def load_state(self, state: Tensor) -> None:
        self.cm = state.detach().double().cpu().view(self.num_classes, self.num_classes).clone()


@TASKS.register("segmentation")
class SegmentationTask:
    """Pixel-wise classification. Model input: float images (N,C,H,W); output: logits (N,K,H,W).

    Data: :class:`kdforge.data.scenes.SegScenes` (default collate). ``criterion`` is cross-entropy
    averaged over non-ignored pixels; distillation losses get ``labels`` = the masks.
    """

    main_metric = "mIoU"
    #: metrics `kdforge compare` shows next to the main one
    report_metrics = ("mIoU", "pixel_acc", "mIoU_fg")

    def __init__(self, num_classes: int = 11, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple[Tensor, Tensor]:
        images, masks = batch[0], batch[1]
        return images.to(device, non_blocking=True), masks.to(device, non_blocking=True).long()

    def criterion(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if outputs.dim() != 4 or outputs.shape[0] != targets.shape[0] or outputs.shape[2:] != targets.shape[1:]:
            raise ValueError(f"segmentation: logits (N,K,H,W) and masks (N,H,W) must agree, got "
                             f"{tuple(outputs.shape)} and {tuple(targets.shape)}")
        return F.cross_entropy(outputs.float(), targets, ignore_index=self.ignore_index)

    def metrics(self) -> ConfusionMeter:
        return ConfusionMeter(self.num_classes, self.ignore_index)

    def loss_context(self, targets: Tensor, batch: Any = None) -> dict[str, Any]:
        index = batch[2].to(targets.device) if batch is not None and len(batch) > 2 else None
        return {"labels": targets, "index": index}

    def dataset(self, split: str, n: int, **kwargs: Any) -> Any:
        """``SegScenes(split, n, **kwargs)`` (``size``, ``root``, ``cache_dir``, ``seed``)."""
        from ..data.scenes import SegScenes

        return SegScenes(split, n, **kwargs)

    collate_fn = None  # default collate


__all__ = ["SegmentationTask", "ConfusionMeter"]
