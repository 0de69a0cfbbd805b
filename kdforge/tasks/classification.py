"""Image classification: batches ``(x, y)`` or ``(x, y, index)``, cross-entropy, top-1/top-5 accuracy."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import TASKS


def logits_of(outputs: Any) -> Tensor:
    """The logits in a model's output: the tensor itself, the first of a tuple, or ``out["logits"]``."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], Tensor):
        return outputs[0]
    if isinstance(outputs, Mapping):
        for key in ("logits", "out", "output"):
            if isinstance(outputs.get(key), Tensor):
                return outputs[key]
    raise TypeError(f"classification expects the model to return logits (N, C), a tuple starting with them or a "
                    f"dict with 'logits'; got {type(outputs).__name__}")


class ClassificationMeter:
    """Running top-k accuracy (in %) and mean cross-entropy; state ``[n, loss_sum, correct@k...]``."""

    def __init__(self, topk: Sequence[int] = (1, 5)) -> None:
        self.topk = tuple(topk)
        self._state = torch.zeros(2 + len(self.topk), dtype=torch.float64)

    def update(self, outputs: Any, targets: Tensor) -> None:
        logits = logits_of(outputs).detach().float()
        targets = targets.detach()
        loss = F.cross_entropy(logits, targets, reduction="sum")
        k_max = min(max(self.topk), logits.shape[1])
        pred = logits.topk(k_max, dim=1).indices  # (N, k)
        hit = pred.eq(targets.view(-1, 1))
        row = [float(len(targets)), float(loss)] + [float(hit[:, :min(k, k_max)].any(1).sum()) for k in self.topk]
        self._state += torch.tensor(row, dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        n = float(self._state[0])
        if n == 0:
            return {**{f"top{k}": 0.0 for k in self.topk}, "loss": float("nan")}
        out = {f"top{k}": 100.0 * float(self._state[2 + i]) / n for i, k in enumerate(self.topk)}
        out["loss"] = float(self._state[1]) / n
        return out

    def state(self) -> Tensor:
        return self._state.clone()

    def load_state(self, state: Tensor) -> None:
        if state.shape != self._state.shape:
            raise ValueError(f"meter state has shape {tuple(state.shape)}, expected {tuple(self._state.shape)}")
        self._state = state.detach().to("cpu", torch.float64).clone()


@TASKS.register("classification")
class Classification:
    """Classification task: cross-entropy (optional ``label_smoothing``), top-1/top-5, best by top-1."""

    main_metric = "top1"

    def __init__(self, label_smoothing: float = 0.0, topk: Sequence[int] = (1, 5)) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing, self.topk = label_smoothing, tuple(topk)

    def batch_to(self, batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("a classification batch is (images, labels) or (images, labels, index); "
                            f"got {type(batch).__name__}")
        nb = device.type == "cuda"
        return batch[0].to(device, non_blocking=nb), torch.as_tensor(batch[1]).to(device, non_blocking=nb)

    def criterion(self, outputs: Any, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits_of(outputs).float(), targets, label_smoothing=self.label_smoothing)

    def metrics(self) -> ClassificationMeter:
        return ClassificationMeter(self.topk)

    def loss_context(self, targets: Tensor, batch: Any) -> dict[str, Any]:
        index = batch[2].to(targets.device) if len(batch) > 2 else None
        return {"labels": targets, "index": index}
