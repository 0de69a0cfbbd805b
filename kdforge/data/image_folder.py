"""Your own images: one sub-folder per class (the layout of torchvision's ``ImageFolder``)::

    root/train/cat/001.png      root/val/cat/101.png
    root/train/dog/002.jpg      root/val/dog/102.jpg

Class indices are the sorted sub-folder names of the training folder; the validation folder is read
with the same mapping (a class it has that training lacks is an error, one it lacks is fine).
Images are decoded by Pillow, or by torchvision's ``decode_image`` (``decoder="torchvision"``, or when
Pillow is missing), into uint8 ``(C, H, W)`` tensors; :class:`ImageTransform` then resizes, crops, flips and
normalises them with tensor ops, so both decoders give the same items.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .fashion_mnist import DatasetNotFoundError

IMG_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------ decoding
def _pil_decode(path: Path, channels: int) -> Tensor:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("image_folder needs Pillow (or a working torchvision) to decode images: "
                          "pip install pillow") from None
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    t = torch.from_numpy(arr.copy())
    return t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)


def _torchvision_decoder() -> Callable[[Path, int], Tensor] | None:
    try:  # torchvision built for another torch fails at import with RuntimeError/OSError, not ImportError
        from torchvision.io import ImageReadMode, decode_image
    except Exception:
        return None

    def decode(path: Path, channels: int) -> Tensor:
        mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
        try:
            return decode_image(str(path), mode=mode)
        except Exception:  # a format torchvision does not decode (bmp, tiff, ...): Pillow
            return _pil_decode(path, channels)

    return decode


def _has_pil() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def image_decoder(backend: str = "auto") -> Callable[[Path, int], Tensor]:
    """``decode(path, channels) -> uint8 (C, H, W)``: ``"pil"``, ``"torchvision"``, or ``"auto"`` = Pillow
    when installed, else torchvision (whose image decoding is deprecated since torchvision 0.29)."""
    if backend not in ("auto", "torchvision", "pil"):
        raise ValueError(f"image decoder must be 'auto', 'torchvision' or 'pil', got {backend!r}")
    if backend == "pil" or (backend == "auto" and _has_pil()):
        return _pil_decode
    tv = _torchvision_decoder()
    if tv is None:
        raise ImportError("image_folder needs Pillow or a working torchvision to decode images: pip install pillow")
    return tv


# ----------------------------------------------------------------------------------------- transform
class ImageTransform:
    """uint8 ``(C, H, W)`` → normalised float ``(C, size, size)``.

    Resize so the shorter side is ``resize`` (bilinear, antialiased; default ``round(size / 0.875)``,
    the ImageNet convention 224 ← 256), then crop ``size × size``: random when ``train`` (after
    ``padding`` px of zero padding), centred otherwise; flip horizontally with probability ``flip_p``
    when ``train``; scale to [0, 1] and normalise with ``mean``/``std`` (one value per channel).
    """

    def __init__(self, size: int, resize: int | None = None, train: bool = False, flip_p: float = 0.5,
                 padding: int = 0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if size < 1 or (resize is not None and resize < size) or padding < 0 or not 0 <= flip_p <= 1:
            raise ValueError(f"ImageTransform needs size >= 1, resize >= size, padding >= 0, 0 <= flip_p <= 1; got "
                             f"size={size}, resize={resize}, padding={padding}, flip_p={flip_p}")
        self.size, self.resize = size, resize if resize is not None else int(round(size / 0.875))
        self.train, self.flip_p, self.padding = train, flip_p, padding
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Tensor) -> Tensor:
        c, h, w = img.shape
        if self.mean.numel() not in (1, c):
            raise ValueError(f"mean/std have {self.mean.numel()} values for an image with {c} channels")
        x = img.float().div_(255.0).unsqueeze(0)
        scale = self.resize / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1).clamp_(0, 1)
        if self.train:
            if self.padding:
                x = F.pad(x, [self.padding] * 4)
            top = int(torch.randint(0, x.shape[2] - self.size + 1, ()))
            left = int(torch.randint(0, x.shape[3] - self.size + 1, ()))
        else:
            top, left = (x.shape[2] - self.size) // 2, (x.shape[3] - self.size) // 2
        x = x[0, :, top:top + self.size, left:left + self.size]
        if self.train and self.flip_p and float(torch.rand(())) < self.flip_p:
            x = x.flip(-1)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"ImageTransform(size={self.size}, resize={self.resize}, train={self.train}, flip_p={self.flip_p}, "
                f"padding={self.padding})")


# ------------------------------------------------------------------------------------------- dataset
def find_classes(root: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of ``root`` (hidden folders skipped)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {str(root)!r} does not exist" + (" (it is a file)" if root.exists() else ""))
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(f"image folder {str(root)!r} has no class sub-folders; put each class's images in "
                                   f"its own folder: {root}/<class name>/<image>.png")
    return classes


class ImageFolder(Dataset):
    """Items ``(transform(image), class index)`` from ``root/<class>/<image>`` files.

    ``classes`` fixes the class list (pass the training set's to a validation set); images are files
    whose suffix is in ``extensions`` (case-insensitive), found recursively under each class folder.
    Without ``transform`` an item is the uint8 ``(C, H, W)`` tensor. ``channels`` is 3 (RGB) or 1 (grey).
    """

    def __init__(self, root: str | Path, transform: Callable[[Tensor], Tensor] | None = None,
                 classes: Sequence[str] | None = None, extensions: Sequence[str] = IMG_EXTENSIONS,
                 channels: int = 3, decoder: str = "auto") -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = Path(root).expanduser()
        found = find_classes(self.root)
        self.classes = list(classes) if classes is not None else found
        extra = sorted(set(found) - set(self.classes))
        if extra:
            raise DatasetNotFoundError(f"{self.root} has class folders {extra} that the training folder lacks "
                                       f"(classes: {self.classes}); the two must use the same class names")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        exts = tuple(e.lower() for e in extensions)
        self.samples: list[tuple[Path, int]] = []
        for c in found:
            files = sorted(p for p in (self.root / c).rglob("*") if p.is_file() and p.suffix.lower() in exts)
            self.samples += [(p, self.class_to_idx[c]) for p in files]
        if not self.samples:
            raise DatasetNotFoundError(f"no images ({', '.join(exts)}) under {self.root}/<class>/ for classes {found}")
        self.targets = [y for _, y in self.samples]
        self.transform, self.channels = transform, channels
        self._decode = image_decoder(decoder)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def _item(self, i: int) -> tuple[Tensor, int]:
        path, y = self.samples[i]
        try:
            img = self._decode(path, self.channels)
        except Exception as e:
            raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
        return (self.transform(img) if self.transform is not None else img), y

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self._item(i)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        """A batch of items (files are decoded one by one; wrappers above keep their batched path)."""
        return [self._item(i) for i in indices]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMG_EXTENSIONS", "ImageFolder", "ImageTransform", "find_classes",
           "image_decoder"]
