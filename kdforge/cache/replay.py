"""Replaying cached views: which view a sample gets in an epoch, and the dataset that shows it.

**Which view.** Sample ``i`` in epoch ``e`` of a run with seed ``s`` gets view
``(h(s, i) + e) mod K`` with ``h`` a fixed integer hash (splitmix64): a function of the seed, the epoch
and the index only, so a resumed run, DataLoader workers and every ``torchrun`` rank agree without
communicating, and over ``K`` consecutive epochs each sample cycles through all of its ``K`` views
(in a per-sample order). ``K = 1`` is index-only replay: the same view every epoch.

**The dataset.** :class:`CachedViews` wraps the run's training set. For a batch of indices it gathers
the stored augmentation parameters, lets the dataset produce its items as usual while its
:class:`~kdforge.data.ReplayableTransform` *replays* those parameters (the dataset's batched
``__getitems__`` fast path is kept), and gathers the teacher's cached tensors of the same views. The
collate function :class:`CachedCollate` returns a :class:`CachedBatch` ``(batch, teacher_outputs)``;
the training loop passes ``teacher_outputs`` to the Distiller.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from ..data.transforms import ReplayableTransform
from .manifest import CacheError
from .store import TeacherCache

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def view_schedule(seed: int, epoch: int, index: Sequence[int] | np.ndarray, views: int) -> np.ndarray:
    """The view (``0..views-1``) each sample of ``index`` replays in ``epoch`` (module docstring)."""
    idx = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _splitmix64(_splitmix64(np.full_like(idx, np.uint64(seed % 2**64))) ^ idx)
    return ((h % np.uint64(views)).astype(np.int64) + epoch) % views


def find_transform(dataset: Any) -> ReplayableTransform | None:
    """The augmentation of a dataset, looked for on it and on the datasets it wraps (``.dataset``): its
    ``transform`` attribute, or else any attribute holding a :class:`ReplayableTransform` (CIFAR's
    ``augment``); None when it has none. A random ``transform`` that cannot replay its draws raises
    :class:`CacheError` (and a dataset drawing random numbers elsewhere is caught by the replay probe)."""
    seen, d = set(), dataset
    while d is not None and id(d) not in seen:
        seen.add(id(d))
        t = getattr(d, "transform", None)
        if t is not None:
            if isinstance(t, ReplayableTransform):
                return t
            raise CacheError(f"the training set's transform {t!r} cannot record and replay its random draws, so a "
                             f"teacher cache cannot show the student the views the teacher saw; make it a "
                             f"kdforge.data.ReplayableTransform (draw/apply/spec), or turn augmentation off")
        found = [v for v in vars(d).values() if isinstance(v, ReplayableTransform)] if hasattr(d, "__dict__") else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CacheError(f"{type(d).__name__} holds {len(found)} replayable transforms; a cache replays one — "
                             f"chain them with kdforge.data.Compose")
        d = getattr(d, "dataset", None)
    return None


def fetch(dataset: Any, indices: Sequence[int]) -> list[Any]:
    """Items of ``indices`` as the DataLoader would fetch them (batched ``__getitems__`` when present)."""
    batched = getattr(dataset, "__getitems__", None)
    return list(batched(list(indices))) if callable(batched) else [dataset[i] for i in indices]


class CachedBatch(NamedTuple):
    """A collated batch and the cached teacher tensors of its views ``{teacher: {tap: (n, ...)}}``."""

    batch: Any
    teacher_outputs: dict[str, dict[str, Tensor]]


class _Items(list):  # items of a batch, carrying the batch's teacher tensors to CachedCollate
    teacher: dict[str, dict[str, Tensor]]


class CachedViews(Dataset):
    """The training set, replaying for each sample the cached view the schedule picks (module docstring).

    ``set_epoch(e)`` before each epoch (the trainer does it, like ``ShardSampler.set_epoch``).
    ``taps``: ``{teacher: [tap, …]}`` to read (default: everything in the cache).
    """

    def __init__(self, dataset: Dataset, cache: TeacherCache, seed: int,
                 taps: dict[str, list[str]] | None = None) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if n != cache.length:
            raise CacheError(f"the training set has {n} samples but teacher cache {str(cache.directory)!r} was built "
                             f"for {cache.length}; rebuild it: {cache.rebuild}")
        self.dataset, self.cache, self.seed, self.taps = dataset, cache, seed, taps
        self.transform = find_transform(dataset)
        if self.transform is None and cache.manifest["params"]:
            raise CacheError(f"teacher cache {str(cache.directory)!r} holds augmented views but the training set has no "
                             f"augmentation; turn data.augment back on or rebuild the cache: {cache.rebuild}")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.cache.length

    def replay(self, indices: Sequence[int], views: Sequence[int] | np.ndarray) -> tuple[list[Any], dict[str, Any]]:
        """Items of ``indices`` in the given ``views`` and the teacher tensors of those views."""
        idx, v = np.asarray(indices, dtype=np.int64), np.asarray(views, dtype=np.int64)
        if self.transform is not None:
            with self.transform.replaying(self.cache.params(idx, v)):
                items = fetch(self.dataset, indices)
        else:
            items = fetch(self.dataset, indices)
        return items, self.cache.teacher_outputs(idx, v, self.taps)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        items, teacher = self.replay(indices, view_schedule(self.seed, self.epoch, indices, self.cache.views))
        out = _Items(items)
        out.teacher = teacher
        return out

    def __getitem__(self, i: int) -> Any:
        """One replayed item (without its teacher tensors; the training loader uses ``__getitems__``)."""
        return self.__getitems__([i])[0]


class CachedCollate:
    """Collate the items with the dataset's (or the default) collate function; add the teacher tensors."""

    def __init__(self, collate: Callable[[list[Any]], Any] | None = None) -> None:
        self.collate = collate or default_collate

    def __call__(self, data: list[Any]) -> CachedBatch:
        teacher = getattr(data, "teacher", None)
        if teacher is None:
            raise CacheError("CachedCollate needs batches fetched by CachedViews.__getitems__ (a DataLoader over "
                             "CachedViews does this)")
        return CachedBatch(self.collate(list(data)), teacher)


__all__ = ["CachedBatch", "CachedCollate", "CachedViews", "fetch", "find_transform", "view_schedule"]
