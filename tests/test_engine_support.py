"""Shared helpers for the engine/CLI/DDP tests: a tiny model and a synthetic dataset, registered by name.

Importing this module registers model ``tiny_net`` (and ``tiny_net_other``) in ``MODELS`` and dataset
``synthetic_blobs`` in ``DATASETS``, so configs can name them like zoo entries. No tests here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from kdforge.engine import DATASETS
from kdforge.registry import MODELS


class TinyNet(nn.Module):
    """conv3x3 → (BN) → ReLU → 2×2 avg-pool → fc; ~1k parameters."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, width: int = 4, bn: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.relu(self.bn1(self.conv1(x)))).flatten(1))


MODELS.register("tiny_net", override=True)(TinyNet)
MODELS.register("tiny_net_other", override=True)(lambda **kw: TinyNet(**kw))


class Blobs(Dataset):
    """``n`` images (1, 8, 8): a class-specific pattern + fixed noise; ``jitter`` adds noise drawn from the
    *global* torch RNG at every access (so RNG restoration on resume matters)."""

    def __init__(self, n: int, num_classes: int = 4, seed: int = 0, jitter: float = 0.0) -> None:
        g = torch.Generator().manual_seed(1234)  # same class patterns for train and test
        self.centers = torch.randn(num_classes, 1, 8, 8, generator=g)
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % num_classes
        self.x = self.centers[self.y] + 0.8 * torch.randn(n, 1, 8, 8, generator=g)
        self.jitter = jitter

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = self.x[i]
        if self.jitter:
            x = x + self.jitter * torch.randn(x.shape)
        return x, int(self.y[i])


@DATASETS.register("synthetic_blobs", override=True)
def synthetic_blobs(cfg: Any, seed: int, n_train: int = 128, n_test: int = 64) -> tuple[Dataset, Dataset]:
    return Blobs(n_train, seed=1, jitter=0.3 if cfg.augment else 0.0), Blobs(n_test, seed=2)


def run_config(out: str, epochs: int = 2, jobs: bool = True, bn: bool = False, teacher_weights: str | None = None,
               **train: Any) -> dict[str, Any]:
    """A small run config on ``synthetic_blobs`` (KD on logits + FitNet conv1 → conv1 via a lazy conv1x1)."""
    cfg: dict[str, Any] = {
        "name": "tiny", "seed": 0, "output_dir": out, "device": "cpu",
        "model": {"name": "tiny_net", "kwargs": {"bn": bn}},
        "data": {"name": "synthetic_blobs", "batch_size": 16, "augment": True},
        "train": {"epochs": epochs, "log_every": 4, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                                                                 "weight_decay": 5e-4},
                  "schedule": {"name": "cosine", "warmup_epochs": 0.5}, **train},
        "checkpoint": {"every": 1},
    }
    if jobs:
        cfg["teachers"] = {"t0": {"name": "tiny_net", "kwargs": {"width": 8, "bn": bn}, "weights": teacher_weights}}
        cfg["jobs"] = [{"name": "kd", "loss": "kd", "student": "", "teacher": "", "weight": 0.5, "warmup_iters": 6},
                       {"name": "fit", "loss": "fitnet", "student": "conv1", "teacher": "conv1",
                        "connector": "conv1x1", "weight": 0.1}]
        cfg["train"].setdefault("ce_weight", 0.5)
        if teacher_weights is None:  # a random teacher is fine for testing the machinery
            cfg["allow_untrained_teacher"] = True
    return cfg
