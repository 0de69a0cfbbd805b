"""A data epoch through the trainer's loader: the dataset alone vs ``data.with_index`` (WithIndex).

Iterates one epoch of Fashion-MNIST training batches (augmentation on, batch 128, the trainer's
``make_loader``/``ShardSampler``) for ``plain`` (the dataset) and ``with_index`` (wrapped as the
trainer wraps it for CRD); with ``--per-item`` also the previous wrapper's path (per-sample
``__getitem__``: a wrapper without ``__getitems__``). Epochs are interleaved; medians and ratios.

    python benchmarks/data_epoch.py --repeats 5 [--per-item] [--limit 20000]
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from _bench import interleaved, median
from kdforge.data import FashionMNIST, RandomCropFlip
from kdforge.data.wrappers import WithIndex
from kdforge.engine.data import ShardSampler, make_loader


class PerItem(Dataset):
    """The previous ``IndexedDataset``: ``(*item, index)`` with no ``__getitems__``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return (*self.dataset[i], i)


def epoch_fn(ds: Dataset, batch: int):  # type: ignore[no-untyped-def]
    loader = make_loader(ds, batch, ShardSampler(len(ds), seed=0), 0, None)  # type: ignore[arg-type]

    def epoch() -> None:
        for _ in loader:
            pass
    return epoch


def run(repeats: int, per_item: bool, limit: int | None, batch: int = 128) -> dict[str, float]:
    ds: Dataset = FashionMNIST(train=True, transform=RandomCropFlip())
    if limit:
        ds = Subset(ds, range(limit))
    variants = {"plain": ds, "with_index": WithIndex(ds)}
    if per_item:
        variants["with_index, per-item (previous)"] = PerItem(ds)
    times = interleaved({k: epoch_fn(v, batch) for k, v in variants.items()}, repeats, warmup=1)
    base = median(times["plain"])
    print(f"\nFashion-MNIST data epoch ({len(ds)} images, batch {batch}, augment), {repeats} interleaved "
          f"repeats, {torch.get_num_threads()} thread(s)")
    for k, ts in times.items():
        print(f"  {k:32s} median {median(ts):7.3f} s   ratio to plain {median(ts) / base:5.2f}")
    return {k: median(ts) for k, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-item", action="store_true", help="also the previous per-sample wrapper")
    ap.add_argument("--limit", type=int, default=None, help="first N training images only")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    run(a.repeats, a.per_item, a.limit)


if __name__ == "__main__":
    main()
