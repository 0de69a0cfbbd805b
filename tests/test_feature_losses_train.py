"""Every response/feature loss of this family trains through a Distiller: the loss goes down.

A tiny teacher/student CNN pair (1×16×16 inputs, batch 8), ~5 SGD steps on one fixed batch.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from kdforge.distiller import Distiller


def _cnn(width: int) -> nn.Sequential:
    # 0 conv, 1 bn, 2 relu, 3 conv, 4 bn (pre-ReLU tap), 5 relu, 6 pool, 7 flatten, 8 fc (logits)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10),
    )


LOGITS = {"student": "8", "teacher": "8"}
PRE_RELU = {"student": "4", "teacher": "4"}
# name → (job fields, SGD learning rate); rates scaled to each loss's magnitude
CASES: dict[str, tuple[dict[str, Any], float]] = {
    "dkd": ({**LOGITS}, 0.05),
    "dist": ({**LOGITS}, 0.3),
    "logit_std": ({**LOGITS}, 0.5),
    "at": ({**PRE_RELU}, 0.001),
    "nst": ({**PRE_RELU}, 0.5),
    "ab": ({**PRE_RELU, "connector": "conv1x1_bn"}, 0.0005),
    "ofd": ({**PRE_RELU, "connector": "conv1x1_bn"}, 0.0005),
    "cwd": ({**PRE_RELU, "connector": "conv1x1"}, 0.1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_distillation_loss_decreases(name: str) -> None:
    fields, lr = CASES[name]
    teacher, student = _cnn(8), _cnn(4)
    x = torch.randn(8, 1, 16, 16)
    y = torch.randint(0, 10, (8,))
    distiller = Distiller(student, {"t": teacher}, jobs=[{"loss": name, **fields}])
    distiller.dry_run(x, labels=y)  # materialise lazy connectors
    opt = torch.optim.SGD(distiller.learnable_parameters(), lr=lr, momentum=0.9)
    distiller.train()
    losses = []
    for _ in range(6):
        _, loss = distiller(x, labels=y)
        assert torch.isfinite(loss)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not p.requires_grad for p in teacher.parameters())
    assert losses[-1] < losses[0], f"{name}: {losses}"
