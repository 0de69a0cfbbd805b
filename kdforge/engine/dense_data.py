"""Dataset builders for dense prediction: ``scenes_seg`` and ``scenes_det`` in :data:`DATASETS`.

Both compose scenes from real Fashion-MNIST items (:mod:`kdforge.data.scenes`, cached on disk) and
read their sizes from ``data.kwargs``::

    data:
      name: scenes_seg            # or scenes_det
      root: null                  # Fashion-MNIST directory (default lookup: $KDFORGE_DATA, /usr/share/datasets/...)
      batch_size: 32
      augment: true               # random horizontal flip (image + mask / boxes)
      kwargs: {n_train: 2000, n_test: 500, size: 64}

Other ``kwargs`` (``scale``, ``max_items``, ``threshold``, ``min_visible``, ``min_pixels``,
``cache_dir``) go to :func:`~kdforge.data.scenes.build_scenes`. The train scenes use the Fashion-MNIST
training items and the ``train`` seed, the eval scenes the test items and the ``test`` seed; with
``val_fraction > 0`` the eval set is a held-out part of the train scenes instead. The run's seed does
not change the scenes (they are the same data for every run), only the split when ``val_fraction > 0``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..config import ConfigError
from ..config.run import DataConfig
from ..data.wrappers import fetch_many
from ..registry import DATASETS



class HFlip(Dataset):
    """Random horizontal flip (p=0.5) of a scenes dataset's items: image and mask, or image and boxes."""

    def __init__(self, dataset: Dataset, p: float = 0.5) -> None:
        self.dataset, self.p = dataset, p
        self.num_classes = getattr(dataset, "num_classes", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Any]:
        return self._flip(self.dataset[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Any]]:
        """A batch through the wrapped dataset's batched path; one draw per item, in the same order
        as ``[self[i] for i in indices]``."""
        return [self._flip(item) for item in fetch_many(self.dataset, indices)]

    def _flip(self, item: tuple[Tensor, Any]) -> tuple[Tensor, Any]:
        image, target = item
        if torch.rand(()) >= self.p:
            return image, target
        image = image.flip(-1)
        if isinstance(target, Tensor):  # mask (H, W)
            return image, target.flip(-1)
        boxes = target["boxes"].clone()
        w = image.shape[-1]
        boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        return image, {**target, "boxes": boxes}


def _build(cls: type, cfg: DataConfig, seed: int, n_train: int, n_test: int, size: int,
           scene_kwargs: dict[str, Any]) -> tuple[Dataset, Dataset]:
    from ..data.scenes import build_scenes

    for k, v in (("n_train", n_train), ("n_test", n_test), ("size", size)):
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"data.kwargs.{k}: must be a positive integer, got {v!r}")
    if size % 16:
        raise ConfigError(f"data.kwargs.size: the seg/det models need a multiple of 16, got {size}")
    kw = {k: (tuple(v) if k == "scale" else v) for k, v in scene_kwargs.items() if v is not None}
    train = cls(data=build_scenes("train", n_train, size=size, root=cfg.root, **kw))
    if cfg.val_fraction > 0:
        from ..data import train_val_split

        tr, va = train_val_split(len(train), cfg.val_fraction, seed)
        train, evals = Subset(train, list(tr)), Subset(train, list(va))
    else:
        evals = cls(data=build_scenes("test", n_test, size=size, root=cfg.root, **kw))
    if cfg.augment:
        train = HFlip(train)
    return train, evals


def _scenes(cls_name: str, doc: str) -> Any:
    """A dataset builder for one scenes class; its keyword arguments are the accepted ``data.kwargs``
    (``None`` = :func:`~kdforge.data.scenes.compose_scenes`' default)."""

    def builder(cfg: DataConfig, seed: int, n_train: int = 2000, n_test: int = 500, size: int = 64,
                scale: tuple[float, float] | None = None, max_items: int | None = None,
                threshold: int | None = None, min_visible: float | None = None, min_pixels: int | None = None,
                cache_dir: str | None = None) -> tuple[Dataset, Dataset]:
        from ..data import scenes

        return _build(getattr(scenes, cls_name), cfg, seed, n_train, n_test, size,
                      {"scale": scale, "max_items": max_items, "threshold": threshold, "min_visible": min_visible,
                       "min_pixels": min_pixels, "cache_dir": cache_dir})

    builder.__doc__ = doc
    return builder


scenes_seg = DATASETS.register("scenes_seg")(_scenes(
    "SegScenes", "Segmentation scenes (:class:`~kdforge.data.scenes.SegScenes`): ``(image (1,S,S), mask (S,S))``, "
    "11 classes."))
scenes_det = DATASETS.register("scenes_det")(_scenes(
    "DetScenes", "Detection scenes (:class:`~kdforge.data.scenes.DetScenes`): ``(image, {\"boxes\", \"labels\"})``, "
    "10 classes; batched by the detection task's ``collate_fn``."))


__all__ = ["scenes_seg", "scenes_det", "HFlip"]
