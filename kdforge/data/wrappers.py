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

from torch.utils.data import Dataset


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


def _with_index(item: Any, i: int) -> tuple[Any, ...]:
    return (*item, i) if isinstance(item, tuple) else (item, i)


__all__ = ["WithIndex", "fetch_many"]
