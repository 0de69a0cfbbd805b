"""Segmentation / detection scenes composed from real Fashion-MNIST items.

A scene is a ``size × size`` canvas (default 64) with 1–4 Fashion-MNIST items, each resized by a
random factor in ``scale`` (default 0.6–1.4 ×, i.e. 17–39 px) and pasted at a random position fully
inside the canvas. An item's pixels are those whose (resized) intensity is ≥ ``threshold`` (default
48/255); only those are pasted, so image and mask agree. Later items overwrite earlier ones.

* mask: ``0`` = background, ``c + 1`` for an item of Fashion-MNIST class ``c`` (so 11 classes).
* boxes: ``xyxy`` in input pixels enclosing the item's *visible* pixels (``x2 = last column + 1``);
  items whose visible area is below ``min_visible`` of their own area or below ``min_pixels`` get no
  box (their leftover pixels stay in the image and mask). Box labels are the class ``c`` (0..9).

:func:`build_scenes` is deterministic (a numpy ``PCG64`` generator seeded per split) and caches its
tensors on disk (``torch.save``; loaded with ``weights_only=True``); the cache key hashes every
parameter and, for arrays passed directly, their bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

#: bump when the scene recipe changes, so stale caches are not reused
SCENES_VERSION = 1
#: default seed per split (a different stream of scenes for each)
SPLIT_SEEDS = {"train": 0, "test": 1}
MAX_ITEMS = 4


def default_cache_dir() -> Path:
    """``$KDFORGE_CACHE/scenes`` or ``~/.cache/kdforge/scenes``."""
    base = os.environ.get("KDFORGE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "kdforge")
    return Path(base) / "scenes"


def _paste_item(item: np.ndarray, scale: float, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize one 28×28 uint8 item; return (uint8 pixels, bool mask)."""
    side = max(4, int(round(item.shape[0] * scale)))
    x = torch.from_numpy(item).float()[None, None]
    y = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=scale < 1)
    pix = y[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return pix, pix >= threshold


def compose_scenes(images: np.ndarray, labels: np.ndarray, n: int, size: int = 64, seed: int = 0,
                   scale: tuple[float, float] = (0.6, 1.4), max_items: int = MAX_ITEMS, threshold: int = 48,
                   min_visible: float = 0.3, min_pixels: int = 16) -> dict[str, Tensor]:
    """Compose ``n`` scenes from source ``images`` (uint8 (M,28,28)) and ``labels`` (int (M,)).

    Returns ``images`` uint8 (n,1,S,S), ``masks`` uint8 (n,S,S), ``boxes`` float32 (n,max_items,4)
    xyxy padded with 0, ``labels`` int64 (n,max_items) padded with -1, ``num_boxes`` int64 (n,).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"compose_scenes: need uint8 images (M,H,W) and labels (M,), got images "
                         f"{images.dtype}{images.shape} and labels {labels.shape}")
    if int(round(images.shape[1] * scale[1])) > size:
        raise ValueError(f"compose_scenes: items scaled ×{scale[1]} do not fit a {size}×{size} canvas")
    rng = np.random.Generator(np.random.PCG64(seed))
    out_img = np.zeros((n, 1, size, size), np.uint8)
    out_mask = np.zeros((n, size, size), np.uint8)
    out_boxes = np.zeros((n, max_items, 4), np.float32)
    out_labels = np.full((n, max_items), -1, np.int64)
    out_num = np.zeros(n, np.int64)
    for i in range(n):
        k = int(rng.integers(1, max_items + 1))
        inst = np.full((size, size), -1, np.int64)  # which item owns each pixel
        areas, classes = [], []
        for j in range(k):
            src = int(rng.integers(len(images)))
            pix, m = _paste_item(images[src], float(rng.uniform(*scale)), threshold)
            h, w = m.shape
            y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            region = (slice(y0, y0 + h), slice(x0, x0 + w))
            out_img[i, 0][region][m] = pix[m]
            inst[region][m] = j
            c = int(labels[src])
            out_mask[i][region][m] = c + 1
            areas.append(int(m.sum()))
            classes.append(c)
        nb = 0
        for j in range(k):
            ys, xs = np.nonzero(inst == j)
            if len(ys) < max(min_pixels, min_visible * areas[j]):
                continue
            out_boxes[i, nb] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            out_labels[i, nb] = classes[j]
            nb += 1
        out_num[i] = nb
    return {"images": torch.from_numpy(out_img), "masks": torch.from_numpy(out_mask),
            "boxes": torch.from_numpy(out_boxes), "labels": torch.from_numpy(out_labels),
            "num_boxes": torch.from_numpy(out_num)}


def _fingerprint(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def build_scenes(split: str, n: int, size: int = 64, seed: int | None = None, root: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, source: tuple[np.ndarray, np.ndarray] | None = None,
                 cache: bool = True, **kwargs: Any) -> dict[str, Tensor]:
    """``n`` deterministic scenes of ``split`` (``"train"`` or ``"test"``), cached on disk.

    Items come from Fashion-MNIST's matching split (``load_fashion_mnist(root, train=split == "train")``)
    or from ``source=(images, labels)``. ``seed`` defaults to :data:`SPLIT_SEEDS` ``[split]``.
    ``kwargs`` go to :func:`compose_scenes` (``scale``, ``max_items``, ``threshold``, ``min_visible``,
    ``min_pixels``). The cache file name hashes all of these (and the source data when given directly);
    ``cache=False`` skips the disk.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"build_scenes: split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    seed = SPLIT_SEEDS[split] if seed is None else int(seed)
    key: dict[str, Any] = {"v": SCENES_VERSION, "split": split, "n": n, "size": size, "seed": seed,
                           **{k: list(v) if isinstance(v, tuple) else v for k, v in sorted(kwargs.items())}}
    if source is not None:
        key["source"] = [_fingerprint(np.asarray(source[0])), _fingerprint(np.asarray(source[1]))]
    else:
        key["source"] = "fashion_mnist"
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()) / f"scenes_{split}_{n}_{size}_{digest}.pt"
    if cache and path.exists():
        return torch.load(path, weights_only=True)
    if source is None:
        from .fashion_mnist import load_fashion_mnist  # raises DatasetNotFoundError with instructions

        source = load_fashion_mnist(root, train=split == "train")
    data = compose_scenes(np.asarray(source[0]), np.asarray(source[1]), n, size=size, seed=seed, **kwargs)
    if cache:
        _atomic_save(data, path)
    return data


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class _Scenes(Dataset):
    def __init__(self, split: str = "train", n: int = 2000, size: int = 64, data: dict[str, Tensor] | None = None,
                 transform: Callable[[Tensor], Tensor] | None = None, **build_kwargs: Any) -> None:
        self.data = data if data is not None else build_scenes(split, n, size=size, **build_kwargs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data["images"])

    def _image(self, i: int) -> Tensor:
        x = self.data["images"][i].float().div_(255.0)
        return self.transform(x) if self.transform is not None else x

    def _images(self, idx: Tensor) -> list[Tensor]:
        """A batch of images in one gather + one conversion (``transform`` stays per image: it may
        expect ``(C, H, W)``)."""
        x = self.data["images"][idx].float().div_(255.0)
        return [self.transform(im) for im in x] if self.transform is not None else list(x.unbind(0))


class SegScenes(_Scenes):
    """Segmentation scenes: ``(image float (1,S,S) in [0,1], mask long (S,S) in 0..10)``.

    ``SegScenes("train", 2000, root=...)`` builds (or loads from cache) via :func:`build_scenes`;
    ``SegScenes(data=compose_scenes(...))`` wraps tensors you already have.
    """

    num_classes = 11

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self._image(i), self.data["masks"][i].long()

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """A whole batch at once (the DataLoader uses this when present); same items as ``[self[i] ...]``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(self._images(idx), self.data["masks"][idx].long().unbind(0)))


class DetScenes(_Scenes):
    """Detection scenes: ``(image float (1,S,S), {"boxes": (k,4) xyxy float, "labels": (k,) long})``.

    Labels are Fashion-MNIST classes 0..9. Batch with :func:`det_collate`.
    """

    num_classes = 10

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        k = int(self.data["num_boxes"][i])
        return self._image(i), {"boxes": self.data["boxes"][i, :k].clone(),
                                "labels": self.data["labels"][i, :k].clone()}

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """A whole batch at once (the DataLoader uses this when present); same items as ``[self[i] ...]``."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        boxes, labels, ks = self.data["boxes"][idx], self.data["labels"][idx], self.data["num_boxes"][idx].tolist()
        return [(im, {"boxes": b[:k], "labels": lab[:k]})
                for im, b, lab, k in zip(self._images(idx), boxes, labels, ks)]


def det_collate(batch: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Stack images to (N,1,S,S); keep targets as a list of per-image dicts (variable box counts). Extra
    per-sample fields (the dataset index of ``data.with_index: true``) are stacked into tensors after them."""
    images = torch.stack([b[0] for b in batch])
    extras = tuple(torch.as_tensor([b[i] for b in batch]) for i in range(2, len(batch[0])))
    return (images, [b[1] for b in batch], *extras)


__all__ = ["build_scenes", "compose_scenes", "SegScenes", "DetScenes", "det_collate", "default_cache_dir",
           "SPLIT_SEEDS"]
