"""Fashion-MNIST (Xiao et al., 2017) from its four IDX files, with no torchvision dependency.

The files are looked up in ``DEFAULT_DIRS`` (``$KDFORGE_DATA``, the Debian package
``dataset-fashion-mnist`` at ``/usr/share/datasets/fashion-mnist``, ``./data/fashion-mnist``) or in
the directory you pass. Each of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` may be raw or gzipped (``.gz``).

:class:`FashionMNIST` keeps the whole uint8 tensor in memory; items are normalised float images
``(1, 28, 28)`` with mean ``MEAN`` and std ``STD``. Augmentation (:class:`RandomCropFlip`) works on
those normalised tensors, one image ``(C, H, W)`` or a batch ``(N, C, H, W)``.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .transforms import ReplayableTransform
from .wrappers import WithIndex  # noqa: F401  (re-exported: it lived here before)

DEFAULT_DIRS: tuple[str, ...] = ("$KDFORGE_DATA", "/usr/share/datasets/fashion-mnist", "./data/fashion-mnist")
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
MEAN, STD = 0.2860, 0.3530
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetNotFoundError(FileNotFoundError):
    """The Fashion-MNIST IDX files are not where kdforge looked."""


class IDXError(ValueError):
    """An IDX file that is truncated, corrupt or not an IDX file."""


# ------------------------------------------------------------------------------------- locating
def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _candidates(root: str | Path | None) -> list[Path]:
    if root is not None:
        root = Path(root).expanduser()
        return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    dirs = []
    for d in DEFAULT_DIRS:
        d = os.path.expandvars(d)
        if "$" not in d and d:  # skip an unset $KDFORGE_DATA
            dirs += [Path(d).expanduser()]
    return dirs


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The directory holding the four Fashion-MNIST IDX files (raw or ``.gz``).

    With ``root`` given, look in ``root`` (and ``root/fashion-mnist``, ``root/FashionMNIST/raw``);
    otherwise in :data:`DEFAULT_DIRS`. Raises :class:`DatasetNotFoundError` saying where it looked.
    """
    looked = []
    for d in _candidates(root):
        stems = FILES[True] + FILES[False]
        missing = [s for s in stems if _find_file(d, s) is None]
        if not missing:
            return d
        looked.append(f"  {d}: " + ("directory does not exist" if not d.is_dir() else f"missing {', '.join(missing)}"))
    if root is None and not os.environ.get("KDFORGE_DATA"):
        looked.insert(0, "  $KDFORGE_DATA: not set")
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Looked in:\n" + "\n".join(looked) + "\n"
        "Fix: `sudo apt-get install dataset-fashion-mnist` (installs /usr/share/datasets/fashion-mnist), "
        "or pass --data DIR / set KDFORGE_DATA=DIR where DIR holds train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each raw or .gz)."
    )


# -------------------------------------------------------------------------------------- reading
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw, or gzipped when the name ends in ``.gz``) into a numpy array.

    Checks the magic number (two zero bytes, a known type code, the number of dimensions) and that the
    file holds exactly the bytes its header promises; raises :class:`IDXError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"{path}: the gzip stream is truncated or corrupt ({e}); download the file again") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise IDXError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'empty file'})")
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path} is truncated: its header needs {header} bytes, the file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says (corrupt)"
        raise IDXError(f"{path} is {what}: header {dims} promises {expected} bytes, the file holds {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def load_fashion_mnist(root: str | Path | None = None, train: bool = True) -> tuple[Tensor, Tensor]:
    """The training (``train=True``) or test split: uint8 images ``(N, 28, 28)``, int64 labels ``(N,)``."""
    directory = find_fashion_mnist(root)
    img_path, lbl_path = (_find_file(directory, s) for s in FILES[train])
    assert img_path is not None and lbl_path is not None  # find_fashion_mnist checked
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IDXError(f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise IDXError(f"{lbl_path}: expected labels (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise IDXError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise IDXError(f"{lbl_path}: labels must lie in 0..{len(CLASSES) - 1}, found {labels.min()}..{labels.max()}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------- datasets
class FashionMNIST(Dataset):
    """Fashion-MNIST held in memory; items are ``(normalised float image (1, 28, 28), int label)``.

    ``transform`` (e.g. :class:`RandomCropFlip`) is applied to the normalised image tensor.
    ``indices`` selects a subset (e.g. from :func:`train_val_split`).
    """

    CLASSES = CLASSES
    num_classes = len(CLASSES)

    def __init__(
        self,
        root: str | Path | None = None,
        train: bool = True,
        transform: Callable[[Tensor], Tensor] | None = None,
        indices: Sequence[int] | np.ndarray | Tensor | None = None,
    ) -> None:
        images, labels = load_fashion_mnist(root, train)
        if indices is not None:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
            if idx.numel() and (idx.min() < 0 or idx.max() >= len(labels)):
                raise IndexError(f"indices must lie in 0..{len(labels) - 1} for this split, got {int(idx.min())}..{int(idx.max())}")
            images, labels = images[idx], labels[idx]
        self.images, self.targets = images, labels
        self.train, self.transform = train, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        x = (self.images[i].unsqueeze(0).float().div_(255.0) - MEAN) / STD
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        """A whole batch at once (the DataLoader uses this when present): one gather, one normalisation
        and one call of a batch-capable ``transform`` instead of per-image Python work (3× faster
        epochs for small students, measured with benchmarks/fmnist_recipe.py's student)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = (self.images[idx].unsqueeze(1).float().div_(255.0) - MEAN) / STD
        if self.transform is not None:
            x = self.transform(x)
        return list(zip(x.unbind(0), self.targets[idx].tolist()))


# ------------------------------------------------------------------------------- augmentation
class RandomCropFlip(ReplayableTransform):
    """Random crop after zero padding, and random horizontal flip, as tensor ops (no torchvision).

    Works on one image ``(C, H, W)`` or a batch ``(N, C, H, W)`` (each image gets its own crop and
    flip). ``fill`` is the padding value; the default is black after Fashion-MNIST normalisation.
    Pass a ``torch.Generator`` for reproducible draws. Replayable (:mod:`kdforge.data.transforms`):
    the parameters are ``dy``, ``dx`` (crop offsets in ``0..2*padding``) and ``flip`` (bool).
    """

    def __init__(self, padding: int = 2, flip_p: float = 0.5, fill: float = -MEAN / STD,
                 generator: torch.Generator | None = None) -> None:
        if padding < 0 or not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"RandomCropFlip needs padding >= 0 and 0 <= flip_p <= 1, got {padding}, {flip_p}")
        self.padding, self.flip_p, self.fill, self.generator = padding, flip_p, fill, generator

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        p = self.padding
        if p:  # same draw order as ever (dy, dx, flip): seeded runs keep their augmentation stream
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(torch.int16)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(torch.int16)
        else:
            dy = dx = torch.zeros(n, dtype=torch.int16)
        return {"dy": dy, "dx": dx, "flip": torch.rand(n, generator=generator) < self.flip_p}

    def apply(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        n, c, h, w = x.shape
        p = self.padding
        if p:
            padded = torch.nn.functional.pad(x, (p, p, p, p), value=self.fill)
            dy, dx = params["dy"].long(), params["dx"].long()
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
            x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
        flip = params["flip"].to(torch.bool)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def spec(self) -> dict[str, Any]:
        return {"type": "RandomCropFlip", "padding": self.padding, "flip_p": self.flip_p, "fill": self.fill}

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip_p={self.flip_p})"


def train_val_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)`` into sorted ``(train_indices, val_indices)``."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


__all__ = [
    "CLASSES", "DEFAULT_DIRS", "DatasetNotFoundError", "FashionMNIST", "IDXError", "MEAN", "RandomCropFlip", "STD",
    "WithIndex", "find_fashion_mnist", "load_fashion_mnist", "read_idx", "train_val_split",
]
