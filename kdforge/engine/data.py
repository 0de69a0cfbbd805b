"""Datasets by name for the trainer, and the samplers/loaders it uses.

A dataset builder is registered in :data:`kdforge.DATASETS` and called as
``builder(cfg, seed, **cfg.kwargs)`` with the run's :class:`~kdforge.config.run.DataConfig`; its
keyword parameters are the ``data.kwargs`` a config may set (checked when the config is validated).
It returns ``(train_dataset, eval_dataset)`` where the eval set is the validation split when
``cfg.val_fraction > 0`` and the test split otherwise::

    from kdforge import DATASETS

    @DATASETS.register("my_scenes")
    def my_scenes(cfg, seed, size: int = 64):
        return MyScenes(cfg.root, train=True, size=size), MyScenes(cfg.root, train=False, size=size)

The trainer applies ``train_subset``/``test_subset`` (first N items) and ``with_index`` (items become
``(*item, index)``) itself. Loaders use the dataset's ``collate_fn`` attribute if it has one, else the
task's ``collate_fn`` if it has one (detection), else the default collate.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config.run import DataConfig
from ..data.wrappers import WithIndex
from ..data.fashion_mnist import MEAN, STD
from ..registry import DATASETS


@DATASETS.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig, seed: int, padding: int = 2, flip_p: float = 0.5,
                  fill: float = -MEAN / STD) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST: (1, 28, 28) normalised images, 10 classes; ``augment`` adds random crop + flip
    (``data.kwargs`` go to :class:`~kdforge.data.RandomCropFlip`: ``padding``, ``flip_p``, ``fill``)."""
    from ..data import FashionMNIST, RandomCropFlip, train_val_split

    transform = RandomCropFlip(padding=padding, flip_p=flip_p, fill=fill) if cfg.augment else None
    if cfg.val_fraction > 0:
        full = FashionMNIST(cfg.root, train=True)
        tr, va = (torch.as_tensor(i, dtype=torch.long) for i in train_val_split(len(full), cfg.val_fraction, seed))
        train, val = copy.copy(full), copy.copy(full)
        train.images, train.targets, train.transform = full.images[tr], full.targets[tr], transform
        val.images, val.targets = full.images[va], full.targets[va]
        return train, val
    return FashionMNIST(cfg.root, train=True, transform=transform), FashionMNIST(cfg.root, train=False)


@DATASETS.register("text")
def text(cfg: DataConfig, seed: int, seq_len: int = 128, pattern: str = "*.py", max_train_bytes: int | None = None,
         max_val_bytes: int | None = None) -> tuple[Dataset, Dataset]:
    """Byte-tokenized text windows for language modelling (:mod:`kdforge.data.text`), split by file.

    ``data.root``: a directory of text files (default: the Python standard library's ``.py`` files);
    ``data.val_fraction``: the share of files held out for validation (required: > 0);
    ``data.kwargs``: ``seq_len`` (tokens per window), ``pattern`` (file glob), ``max_train_bytes`` and
    ``max_val_bytes`` (default: all). The split does not depend on ``seed``.
    """
    from ..data.text import text_splits

    if cfg.val_fraction <= 0:
        raise ValueError("data.name=text splits files into train/validation: set data.val_fraction (e.g. 0.1)")
    if cfg.augment:
        raise ValueError("data.name=text has no augmentation: drop data.augment")
    return text_splits(cfg.root, pattern=pattern, seq_len=seq_len, val_fraction=cfg.val_fraction,
                       max_train_bytes=max_train_bytes, max_val_bytes=max_val_bytes)


#: the engine's name for :class:`kdforge.data.WithIndex` (kept: older code imports it from here)
IndexedDataset = WithIndex


def build_datasets(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, Any]:
    """``(train, eval, collate_fn)`` for a data config: registry lookup, subsets, index wrapping."""
    train, evals = DATASETS.build(cfg.name, cfg, seed, **cfg.kwargs)
    collate = getattr(train, "collate_fn", None)
    if cfg.train_subset is not None and cfg.train_subset < len(train):
        train = Subset(train, range(cfg.train_subset))
    if cfg.test_subset is not None and cfg.test_subset < len(evals):
        evals = Subset(evals, range(cfg.test_subset))
    if cfg.with_index:
        train = WithIndex(train)
    return train, evals, collate


class ShardSampler(Sampler[int]):
    """Seeded per-epoch shuffling, sharded over ranks: rank ``r`` of ``w`` takes ``perm[r::w]``.

    The permutation depends only on ``seed + epoch`` (call :meth:`set_epoch`), so a resumed run sees
    the same data order as an uninterrupted one, and N processes together see the same global
    batches as one process (the last incomplete round is padded by wrapping, like
    ``DistributedSampler``). With ``shuffle=False`` and ``pad=False`` (evaluation) every sample is
    seen exactly once overall.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0,
                 pad: bool = True) -> None:
        self.n, self.rank, self.world, self.shuffle, self.seed, self.pad = n, rank, world_size, shuffle, seed, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.n, generator=g).tolist()
        else:
            idx = list(range(self.n))
        if self.pad and self.world > 1:
            total = math.ceil(self.n / self.world) * self.world
            idx += idx[: total - self.n]
        return idx[self.rank::self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        if self.pad and self.world > 1:
            return math.ceil(self.n / self.world)
        return len(range(self.rank, self.n, self.world))


def make_loader(dataset: Dataset, batch_size: int, sampler: Sampler[int], num_workers: int, collate: Any,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader whose worker seeds come from its own generator (reseeded per epoch by the trainer)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, pin_memory=pin_memory, generator=torch.Generator(),
                      persistent_workers=False)
