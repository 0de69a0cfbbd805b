"""CIFAR-10 / CIFAR-100 (Krizhevsky, 2009) from the standard "python version" archive, read safely.

The archive is ``cifar-10-python.tar.gz`` (folder ``cifar-10-batches-py``: ``data_batch_1`` …
``data_batch_5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python.tar.gz`` (folder
``cifar-100-python``: ``train``, ``test``, ``meta``). ``root`` may be the extracted folder, its
parent, or the ``.tar.gz`` itself (read without extracting).

Each batch is a Python pickle of a dict ``{b"data": uint8 array (N, 3072), b"labels" or
b"fine_labels": [int], ...}``. Pickles can run arbitrary code, so :func:`safe_load_pickle` uses an
unpickler that resolves only the few numpy globals an array needs (``_reconstruct``, ``ndarray``,
``dtype``, ``_frombuffer``; and ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes — the
same set torch's ``weights_only`` loader allows for these) and rejects every other global with :class:`UnsafePickleError`.

:class:`CIFAR` keeps the uint8 images in memory; items are ``(float image (3, 32, 32) normalised
with the dataset's mean/std, int label)``; ``augment=True`` adds the usual random crop (4 px zero
padding) + horizontal flip. ``__getitems__`` builds a whole batch with tensor ops.
"""
from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .fashion_mnist import DatasetNotFoundError, RandomCropFlip

# name → (folder in the archive, archive file, train batches, test batch, meta file, label key, names key)
LAYOUTS: dict[str, dict[str, Any]] = {
    "cifar10": {"folder": "cifar-10-batches-py", "archive": "cifar-10-python.tar.gz",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "labels": "labels", "names": "label_names", "num_classes": 10,
                "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
    "cifar100": {"folder": "cifar-100-python", "archive": "cifar-100-python.tar.gz",
                 "train": ["train"], "test": ["test"],
                 "meta": "meta", "labels": "fine_labels", "names": "fine_label_names", "num_classes": 100,
                 "mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)},
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for a Python object other than a numpy array (refused, never executed)."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    reconstruct, frombuffer = core.multiarray._reconstruct, core.numeric._frombuffer
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           # Python 3's protocol-2 pickles write bytes as encode(str, "latin1")
                                           ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core", "numpy._core"):  # pickles written by numpy 1.x and by numpy 2.x
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle the global {module}.{name}: a CIFAR batch holds only dicts, lists, bytes and "
                f"numpy arrays, so this file is not a CIFAR batch (or has been tampered with)") from None


def safe_load_pickle(data: bytes, what: str = "pickle") -> Any:
    """Unpickle ``data`` allowing only builtin containers/scalars and numpy arrays (see module docs).

    Python 2 strings are decoded as ``bytes`` (how the CIFAR archives were written)."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{what}: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise pickle.UnpicklingError(f"{what} is not a readable pickle ({type(e).__name__}: {e})") from None


def _str_keys(d: Any, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"{what} holds a {type(d).__name__}, not the dict a CIFAR batch is")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in d.items()}


class _Source:
    """The files of one archive: an extracted folder or the ``.tar.gz`` itself."""

    def __init__(self, name: str, root: str | Path | None) -> None:
        lay = LAYOUTS[name]
        if root is None:
            raise DatasetNotFoundError(f"{name} needs data.root: the folder holding {lay['folder']}/ (or "
                                       f"{lay['archive']}) from https://www.cs.toronto.edu/~kriz/cifar.html")
        root = Path(root).expanduser()
        self.tar: tarfile.TarFile | None = None
        for cand in (root, root / lay["folder"]):
            if cand.is_dir() and all((cand / f).is_file() for f in lay["train"] + lay["test"]):
                self.dir: Path | None = cand
                self.where = str(cand)
                return
        for cand in (root, root / lay["archive"]):
            if cand.is_file() and cand.name.endswith((".tar.gz", ".tgz", ".tar")):
                self.dir, self.where = None, str(cand)
                self.tar = tarfile.open(cand)
                self._prefix = lay["folder"]
                return
        listing = ", ".join(sorted(p.name for p in root.iterdir())[:10]) if root.is_dir() else "it does not exist"
        raise DatasetNotFoundError(
            f"no {name} data under {str(root)!r} ({listing}). Expected the extracted folder {lay['folder']}/ with "
            f"{', '.join(lay['train'] + lay['test'])}, or the archive {lay['archive']}, in the python-pickle format")

    def read(self, file: str) -> bytes:
        if self.dir is not None:
            return (self.dir / file).read_bytes()
        assert self.tar is not None
        try:
            member = self.tar.extractfile(f"{self._prefix}/{file}")
        except KeyError:
            member = None
        if member is None:
            raise DatasetNotFoundError(f"{self.where} has no {self._prefix}/{file}")
        return member.read()


def load_cifar(name: str, root: str | Path | None, train: bool = True) -> tuple[Tensor, Tensor, list[str]]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,), class names)`` of one split of ``cifar10``
    or ``cifar100`` (fine labels), read with :func:`safe_load_pickle`."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown CIFAR variant {name!r}; choose one of {', '.join(LAYOUTS)}")
    lay, src = LAYOUTS[name], _Source(name, root)
    images, labels = [], []
    for file in lay["train" if train else "test"]:
        batch = _str_keys(safe_load_pickle(src.read(file), f"{src.where}: {file}"), file)
        if "data" not in batch or lay["labels"] not in batch:
            raise ValueError(f"{src.where}: {file} has keys {sorted(batch)}, not 'data' and {lay['labels']!r}; "
                             f"is this {name} (and not the other CIFAR)?")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{src.where}: {file} data has shape {data.shape}, expected (N, 3072)")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[lay["labels"]], dtype=np.int64))
    try:
        meta = _str_keys(safe_load_pickle(src.read(lay["meta"]), f"{src.where}: {lay['meta']}"), lay["meta"])
    except FileNotFoundError:  # the class names are optional
        meta = {}
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(lay["names"], [])]
    y = np.concatenate(labels)
    if y.size and (y.min() < 0 or y.max() >= lay["num_classes"]):
        raise ValueError(f"{src.where}: labels span {y.min()}..{y.max()}, outside 0..{lay['num_classes'] - 1} of {name}")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(y), names or [str(i) for i in range(lay["num_classes"])]


class CIFAR(Dataset):
    """CIFAR-10/100 in memory; items ``(normalised float (3, 32, 32), int label)``.

    ``name`` is ``"cifar10"`` or ``"cifar100"``; ``augment`` adds random crop (``padding`` px of zeros)
    and horizontal flip; ``indices`` selects a subset; ``mean``/``std`` default to the training set's.
    """

    def __init__(self, name: str, root: str | Path | None, train: bool = True, augment: bool = False,
                 padding: int = 4, flip_p: float = 0.5, indices: Sequence[int] | np.ndarray | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 data: tuple[Tensor, Tensor, list[str]] | None = None) -> None:
        images, labels, self.classes = data if data is not None else load_cifar(name, root, train)
        if indices is not None:
            idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
            images, labels = images[idx], labels[idx]
        self.name, self.images, self.targets, self.train = name, images, labels, train
        self.num_classes = LAYOUTS[name]["num_classes"]
        self.mean = torch.tensor(mean or LAYOUTS[name]["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(std or LAYOUTS[name]["std"]).view(1, 3, 1, 1)
        self.augment = RandomCropFlip(padding, flip_p, fill=0.0) if augment else None

    def __len__(self) -> int:
        return len(self.targets)

    def _batch(self, idx: Tensor) -> Tensor:
        x = self.images[idx].float().div_(255.0)
        if self.augment is not None:
            x = self.augment(x)
        return (x - self.mean) / self.std

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self._batch(torch.tensor([i]))[0], int(self.targets[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        """A whole batch with one gather, one augmentation call and one normalisation."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return list(zip(self._batch(idx).unbind(0), self.targets[idx].tolist()))


__all__ = ["CIFAR", "LAYOUTS", "UnsafePickleError", "load_cifar", "safe_load_pickle"]
