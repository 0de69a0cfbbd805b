"""Dataset wrappers that keep the DataLoader's batched path.

A ``DataLoader`` with automatic batching calls ``dataset.__getitems__(indices)`` once per batch when
the dataset has it, and ``dataset[i]`` once per sample otherwise. Datasets held in memory
(:class:`~kdforge.data.FashionMNIST`, the scenes) gather a batch in one tensor op, so a wrapper
without ``__getitems__`` would silently cost a Python call per sample (17.3 vs 1.6 ms per batch of
128 Fashion-MNIST images, measured for the old ``IndexedDataset``). Every wrapper here forwards a
batch with :func:`fetch_many`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset


def fetch_many(dataset: Any, indices: Sequence[int]) -> list[Any]:
    """``dataset.__getitems__(indices)`` when the dataset has it, else ``[dataset[i] for i in indices]``."""
    fetch = getattr(dataset, "__getitems__", None)
    return fetch(list(indices)) if callable(fetch) else [dataset[i] for i in indices]


class WithIndex(Dataset):
    """Items ``(*item, index)`` (``(item, index)`` for a non-tuple item): the position in this dataset,
    what CRD's memory bank needs (``data.with_index: true`` in a run config)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return _with_index(self.dataset[i], i)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, ...]]:
        return [_with_index(item, i) for item, i in zip(fetch_many(self.dataset, indices), indices)]

    def __getattr__(self, name: str) -> Any:  # targets, CLASSES, collate_fn ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def dataset_labels(dataset: Any) -> Tensor | None:
    """The label of every item of ``dataset`` as an int64 tensor (``out[i]`` = label of ``dataset[i]``),
    read from its ``targets`` attribute through :class:`WithIndex` and ``torch.utils.data.Subset``
    wrappers without loading any item; ``None`` when the dataset has no integer ``targets`` of its
    length (e.g. detection targets, text)."""
    if isinstance(dataset, WithIndex):
        return dataset_labels(dataset.dataset)
    if isinstance(dataset, Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    try:
        labels = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError):  # e.g. a list of dicts (detection boxes)
        return None
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.numel() != len(dataset):
        return None
    return labels.long()


def _with_index(item: Any, i: int) -> tuple[Any, ...]:
    return (*item, i) if isinstance(item, tuple) else (item, i)


__all__ = ["WithIndex", "dataset_labels", "fetch_many"]
