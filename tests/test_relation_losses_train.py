"""Each relational loss, driven through the Distiller, goes down over a few SGD steps on a fixed batch."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from kdforge.distiller import Distiller, DistillJob

BATCH = 16


def tiny_cnn(width: int) -> nn.Sequential:
    """1×16×16 → conv(w) 8×8 → conv(2w) 4×4 → pooled (2w) → 10 logits. Taps: '2', '4', '7' (penultimate), '8'."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),      # 0 1 2: (N, w, 8, 8)
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),     # 3 4:   (N, 2w, 4, 4)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity(),               # 5 6 7: (N, 2w)
        nn.Linear(2 * width, 10),                                           # 8:     (N, 10)
    )


# name → (job fields with the recipe weight, SGD learning rate). CRD: a dataset larger than the batch
# (as in training), otherwise every bank row moves each step and the fixed-batch loss is non-stationary.
CASES: dict[str, tuple[dict[str, Any], float]] = {
    "rkd": (dict(loss="rkd", student="7", teacher="7", weight=1.0), 0.05),
    "pkt": (dict(loss="pkt", student="7", teacher="7", weight=30000.0), 0.05),
    "sp": (dict(loss="sp", student="4", teacher="4", weight=3000.0), 0.05),
    "cc": (dict(loss="cc", student="7", teacher="7", weight=100.0), 0.05),
    "crd": (dict(loss={"type": "crd", "n_data": 1024, "nce_k": 64}, student="7", teacher="7", weight=0.8), 0.01),
    "irg": (dict(loss="irg", student=["2", "4", "7", "8"], teacher=["2", "4", "7", "8"], weight=1.0), 0.05),
}


@pytest.mark.parametrize("name", list(CASES))
def test_distillation_loss_goes_down(name: str) -> None:
    fields, lr = CASES[name]
    student, teacher = tiny_cnn(4), tiny_cnn(8)
    x = torch.randn(BATCH, 1, 16, 16)
    ctx = {"index": torch.arange(BATCH)}
    distiller = Distiller(student, {"t0": teacher}, [DistillJob(name=name, **fields)])
    if distiller.needs_dataset_labels:  # CRD draws negatives from other classes of the (1024-sample) dataset
        distiller.set_dataset_labels(torch.arange(1024) % 10)
    distiller.dry_run(x, **ctx)  # materialise lazy heads (CRD) before building the optimiser
    opt = torch.optim.SGD(distiller.learnable_parameters(), lr=lr, momentum=0.9)
    values = []
    for _ in range(6):
        _, kd_loss = distiller(x, **ctx)
        values.append(kd_loss.item())
        opt.zero_grad()
        kd_loss.backward()
        opt.step()
    assert all(torch.isfinite(torch.tensor(values))), values
    assert values[-1] < values[0], f"{name}: {values}"
