"""Object detection task: batches from :func:`kdforge.data.scenes.det_collate`, CenterNet loss, COCO mAP.

Batch: ``(images (N,C,H,W), [{"boxes": (k,4) xyxy input pixels, "labels": (k,) long}, …])``.
Model output: the detector's raw head dict (``{"heatmap", "wh", "offset"}``); the meter decodes it.
mAP comes from ``faster-coco-eval`` (pycocotools-compatible COCOeval; ``pip install faster-coco-eval``).
"""
from __future__ import annotations

import contextlib
import io
import random
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..models.det import centernet_decode, centernet_loss
from ..registry import TASKS

Targets = list[dict[str, Tensor]]


class COCOMeter:
    """Accumulates detections and ground truth; ``compute()`` → ``mAP`` (@[.5:.95]), ``mAP50``, ``mAP75``.

    ``update(outputs, targets)`` accepts decoded predictions (a list of ``{"boxes","scores","labels"}``)
    or raw head outputs, which it decodes with ``decode`` (default CenterNet, ``score_thresh=0.01``,
    ``topk=100``). Boxes are xyxy; evaluation is COCOeval's (101-point interpolation, maxDets 100).
    ``state()`` is a float64 row table (one row per box); gather it across ranks and pass the
    concatenation to ``load_state`` (rows carry a per-meter id, so images from ranks do not collide).
    ``reduce = "cat"`` tells a distributed evaluator to all-gather (variable row counts), not sum.
    """

    reduce = "cat"

    def __init__(self, num_classes: int = 10, decode: Callable[..., Targets] | None = None,
                 score_thresh: float = 0.01, topk: int = 100) -> None:
        self.num_classes = num_classes
        self.decode = decode or (lambda o: centernet_decode(o, score_thresh, topk))
        self.uid = float(random.Random().getrandbits(40))
        self.rows: list[Tensor] = []  # [uid, image, is_pred, label, score, x1, y1, x2, y2]
        self.n_images = 0

    def update(self, outputs: Any, targets: Sequence[dict[str, Tensor]]) -> None:
        preds = outputs if isinstance(outputs, (list, tuple)) else self.decode(outputs)
        if len(preds) != len(targets):
            raise ValueError(f"COCOMeter: {len(preds)} predictions for {len(targets)} targets")
        for p, t in zip(preds, targets):
            img = float(self.n_images)
            self.n_images += 1
            for kind, d, scores in ((0.0, t, None), (1.0, p, p["scores"])):
                b = d["boxes"].detach().double().cpu().reshape(-1, 4)
                k = len(b)
                s = torch.ones(k, dtype=torch.float64) if scores is None else scores.detach().double().cpu()
                meta = torch.tensor([self.uid, img, kind], dtype=torch.float64).expand(k, 3)
                self.rows.append(torch.cat([meta, d["labels"].detach().double().cpu().view(-1, 1), s.view(-1, 1), b], 1))
            # an image without boxes still counts: add a marker row (label -1)
            self.rows.append(torch.tensor([[self.uid, img, -1.0, -1.0, 0, 0, 0, 0, 0]], dtype=torch.float64))

    def state(self) -> Tensor:
        return torch.cat(self.rows) if self.rows else torch.zeros(0, 9, dtype=torch.float64)

    def load_state(self, state: Tensor) -> None:
        self.rows = [state.detach().double().cpu()]

    def compute(self) -> dict[str, float]:
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ImportError("detection mAP needs faster-coco-eval: pip install faster-coco-eval") from None
        rows = self.state()
        keys: dict[tuple[float, float], int] = {}
        for r in rows[:, :2].tolist():
            keys.setdefault((r[0], r[1]), len(keys) + 1)
        images, anns, dets = [{"id": i} for i in keys.values()], [], []
        for r in rows.tolist():
            if r[2] < 0:
                continue
            x1, y1, x2, y2 = r[5:]
            box = [x1, y1, x2 - x1, y2 - y1]
            item = {"image_id": keys[(r[0], r[1])], "category_id": int(r[3]) + 1, "bbox": box}
            if r[2] == 0:
                anns.append({**item, "id": len(anns) + 1, "area": box[2] * box[3], "iscrowd": 0})
            else:
                dets.append({**item, "score": r[4]})
        if not anns or not dets:
            return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0}
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c + 1} for c in range(self.num_classes)]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            ev = COCOeval_faster(gt, gt.loadRes(dets), "bbox", print_function=lambda *a, **k: None)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        s = [max(0.0, float(v)) for v in ev.stats[:3]]  # COCO reports -1 when nothing to evaluate
        return {"mAP": s[0], "mAP50": s[1], "mAP75": s[2]}


def _move(t: dict[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}


@TASKS.register("detection")
class DetectionTask:
    """CenterNet detection on :class:`kdforge.data.scenes.DetScenes` (collate :func:`det_collate`).

    Distillation losses get ``boxes`` (list of (k,4) xyxy input-pixel boxes), ``gt_labels`` (list of
    (k,)) and ``image_size`` ((H, W) of the input) from :meth:`loss_context`.
    """

    main_metric = "mAP"
    #: metrics `kdforge compare` shows next to the main one
    report_metrics = ("mAP", "mAP50", "mAP75")

    def __init__(self, num_classes: int = 10, wh_weight: float = 0.1, offset_weight: float = 1.0,
                 score_thresh: float = 0.01, topk: int = 100) -> None:
        self.num_classes, self.wh_weight, self.offset_weight = num_classes, wh_weight, offset_weight
        self.score_thresh, self.topk = score_thresh, topk

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple[Tensor, Targets]:
        images, targets = batch[0], batch[1]
        return images.to(device, non_blocking=True), [_move(t, device) for t in targets]

    def criterion(self, outputs: dict[str, Tensor], targets: Targets) -> Tensor:
        if not isinstance(outputs, dict) or "heatmap" not in outputs:
            raise ValueError("detection: outputs must be the CenterNet head dict {'heatmap','wh','offset'}")
        if outputs["heatmap"].shape[0] != len(targets):
            raise ValueError(f"detection: {outputs['heatmap'].shape[0]} outputs for {len(targets)} targets")
        return centernet_loss(outputs, targets, self.wh_weight, self.offset_weight)

    def metrics(self) -> COCOMeter:
        return COCOMeter(self.num_classes, score_thresh=self.score_thresh, topk=self.topk)

    def loss_context(self, targets: Targets, batch: Any = None) -> dict[str, Any]:
        ctx: dict[str, Any] = {"boxes": [t["boxes"] for t in targets], "gt_labels": [t["labels"] for t in targets]}
        if batch is not None:
            ctx["image_size"] = tuple(batch[0].shape[-2:])
            if len(batch) > 2:  # (images, targets, index) with data.with_index: true
                ctx["index"] = batch[2].to(targets[0]["boxes"].device) if targets else batch[2]
        return ctx

    def dataset(self, split: str, n: int, **kwargs: Any) -> Any:
        """``DetScenes(split, n, **kwargs)`` (``size``, ``root``, ``cache_dir``, ``seed``)."""
        from ..data.scenes import DetScenes

        return DetScenes(split, n, **kwargs)

    @staticmethod
    def collate_fn(batch: list) -> Any:
        from ..data.scenes import det_collate

        return det_collate(batch)


__all__ = ["DetectionTask", "COCOMeter"]
