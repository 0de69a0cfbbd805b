"""Tiny datasets in the real on-disk formats: class folders of PNGs and CIFAR python-pickle archives."""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from kdforge.data.cifar import LAYOUTS


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6,
                       val_per_class: int = 3, size: tuple[int, int] = (20, 24), seed: int = 0) -> Path:
    """``root/{train,val}/<class>/*.png``; class ``k`` (sorted index) images are mostly colour channel ``k % 3`` (learnable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for k, c in enumerate(sorted(classes)):  # k = the class index ImageFolder gives
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (*size, 3), dtype=np.uint8)
                img[..., k % 3] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes ``bytes`` and ``str`` as Python 2 strings (BINSTRING), as the CIFAR files were written by
    Python 2's cPickle; Python 3's own protocol 2 would route bytes through ``_codecs.encode``."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _pickle_py2_style(obj: object) -> bytes:
    """Protocol 2, Python 2 strings, numpy-1.x global names: the format of the published CIFAR files."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_arrays(name: str, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(seed)
    k = LAYOUTS[name]["num_classes"]
    return {split: (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, k, n).tolist())
            for split, n in (("train", n_train), ("test", n_test))}


def write_cifar(root: Path, name: str = "cifar10", n_train: int = 20, n_test: int = 10, archive: bool = False,
                seed: int = 0) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    """The extracted folder (or, with ``archive``, the ``.tar.gz``) of a small CIFAR in the real format."""
    lay = LAYOUTS[name]
    arrays = cifar_arrays(name, n_train, n_test, seed)
    folder = root / lay["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "test"):
        data, labels = arrays[split]
        parts = np.array_split(np.arange(len(labels)), len(lay[split]))
        for file, idx in zip(lay[split], parts):
            batch = {b"batch_label": f"{file} of 1".encode(), b"data": data[idx],
                     lay["labels"].encode(): [labels[i] for i in idx],
                     b"filenames": [f"img_{i}.png".encode() for i in idx]}
            if name == "cifar100":
                batch[b"coarse_labels"] = [0] * len(idx)
            files[file] = _pickle_py2_style(batch)
    names = [f"class{i}".encode() for i in range(lay["num_classes"])]
    files[lay["meta"]] = _pickle_py2_style({lay["names"].encode(): names, b"num_cases_per_batch": 10})
    for file, blob in files.items():
        (folder / file).write_bytes(blob)
    if not archive:
        return folder, arrays
    tgz = root / lay["archive"]
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname=lay["folder"])
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
    return tgz, arrays
