"""Arrays of a teacher cache on disk: ``.npy`` files opened as read-only memory maps (no pickle).

Every array has the sample index as its first and the view as its second dimension, ``(N, K, ...)``:
the augmentation parameters (``params/<name>.npy``) and, per teacher and tap, either the whole
tensor (``<teacher>/<tap id>.npy``) or top-k logits (``….values.npy``, ``….indices.npy``,
``….lse.npy``, see :mod:`kdforge.cache.topk`). bf16 is stored as its raw 16 bits (``int16``);
numpy has no bfloat16. :class:`TeacherCache` reads the rows of a batch with one fancy-index gather
per array; it opens the memory maps lazily in each process, so DataLoader workers and ``torchrun``
ranks each map the same files read-only and share the pages through the OS page cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from . import topk as topk_mod
from .manifest import CacheError, read_manifest

#: storage dtypes: name → (torch dtype of the values, numpy dtype on disk)
DTYPES: dict[str, tuple[torch.dtype, str]] = {"fp16": (torch.float16, "<f2"), "bf16": (torch.bfloat16, "<i2"),
                                               "fp32": (torch.float32, "<f4")}


def to_numpy(t: Tensor, dtype: str) -> np.ndarray:
    """A tensor in storage ``dtype`` ("fp16", "bf16", "fp32") or as an exact integer/bool array ("raw")."""
    t = t.detach().cpu()
    if dtype == "raw":
        return t.numpy()
    tdt, _ = DTYPES[dtype]
    t = t.to(tdt)
    return t.view(torch.int16).numpy() if tdt == torch.bfloat16 else t.numpy()


def from_numpy(a: np.ndarray, dtype: str) -> Tensor:
    """Inverse of :func:`to_numpy`; stored floats come back as float32."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype == "raw":
        return t
    if dtype == "bf16":
        t = t.view(torch.bfloat16)
    return t.float()


class ArrayWriter:
    """Creates the ``(N, K, ...)`` arrays of a cache being built in ``directory`` (memory-mapped .npy)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.arrays, self.entries = directory, {}, {}

    def create(self, name: str, shape: tuple[int, ...], np_dtype: Any, dtype: str) -> None:
        path = self.directory / f"{name}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=np_dtype, shape=shape)
        self.entries[name] = {"file": f"{name}.npy", "dtype": dtype, "np_dtype": np.dtype(np_dtype).str,
                              "shape": list(shape)}

    def write(self, name: str, rows: slice, view: int, value: np.ndarray) -> None:
        self.arrays[name][rows, view] = value

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays.values())

    def close(self) -> None:
        for a in self.arrays.values():
            a.flush()
        self.arrays.clear()


class TeacherCache:
    """A complete, validated-on-open teacher cache directory (see :func:`kdforge.cache.open_cache`).

    ``manifest`` is the parsed manifest; :meth:`params` and :meth:`teacher_outputs` gather the rows
    of given samples and views.
    """

    def __init__(self, directory: str | Path, rebuild: str = "kdforge cache build CONFIG --views K --out DIR") -> None:
        self.directory = Path(directory)
        self.rebuild = rebuild
        self.manifest = read_manifest(self.directory, rebuild)
        self.views: int = int(self.manifest["views"])
        self.length: int = int(self.manifest["dataset"]["length"])
        self._arrays: dict[str, np.ndarray] = {}
        for name in self.manifest["arrays"]:
            self._array(name)  # open (and check) every file now: a damaged cache fails at start-up

    def _array(self, name: str) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None:
            e = self.manifest["arrays"][name]
            path = self.directory / e["file"]
            try:
                a = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise CacheError(f"teacher cache file {path} is missing, truncated or damaged ({err}); rebuild the "
                                 f"cache: {self.rebuild}") from None
            if list(a.shape) != e["shape"] or a.dtype.str != e["np_dtype"]:
                raise CacheError(f"teacher cache file {path} holds {a.dtype.str} {list(a.shape)}, the manifest says "
                                 f"{e['np_dtype']} {e['shape']}; rebuild the cache: {self.rebuild}")
            self._arrays[name] = a
        return a

    def __getstate__(self) -> dict[str, Any]:  # workers re-open the memory maps themselves
        return {**self.__dict__, "_arrays": {}}

    def _gather(self, name: str, index: np.ndarray, views: np.ndarray) -> Tensor:
        return from_numpy(self._array(name)[index, views], self.manifest["arrays"][name]["dtype"])

    def params(self, index: np.ndarray, views: np.ndarray) -> dict[str, Tensor]:
        """Augmentation parameters of samples ``index`` in views ``views`` (both ``(n,)`` int arrays)."""
        return {p: self._gather(f"params/{p}", index, views) for p in self.manifest["params"]}

    def teacher_outputs(self, index: np.ndarray, views: np.ndarray,
                        taps: Mapping[str, list[str]] | None = None) -> dict[str, dict[str, Tensor]]:
        """``{teacher: {tap: float32 tensor (n, ...)}}``; top-k taps come back as full logits (restored)."""
        out: dict[str, dict[str, Tensor]] = {}
        for tname, t in self.manifest["teachers"].items():
            wanted = taps.get(tname) if taps is not None else list(t["taps"])
            if not wanted:
                continue
            out[tname] = {}
            for tap in wanted:
                e = t["taps"][tap]
                base = f"{tname}/{e['id']}"
                if e["storage"] == "topk":
                    out[tname][tap] = topk_mod.restore(self._gather(base + ".values", index, views),
                                                       self._gather(base + ".indices", index, views),
                                                       self._gather(base + ".lse", index, views), e["shape"][-1])
                else:
                    out[tname][tap] = self._gather(base, index, views)
        return out

    def topk_parts(self, teacher: str, tap: str, index: np.ndarray, views: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """The stored ``(values, indices, lse)`` of a top-k tap (for error bounds)."""
        base = f"{teacher}/{self.manifest['teachers'][teacher]['taps'][tap]['id']}"
        return (self._gather(base + ".values", index, views), self._gather(base + ".indices", index, views),
                self._gather(base + ".lse", index, views))

    def probe(self) -> tuple[list[int], Tensor]:
        """The indices and view-0 inputs recorded at build time (to check that replay reproduces them)."""
        p = self.manifest["probe"]
        return list(p["indices"]), from_numpy(np.load(self.directory / p["file"], allow_pickle=False), "raw")

    def nbytes(self) -> int:
        return sum((self.directory / e["file"]).stat().st_size for e in self.manifest["arrays"].values())


__all__ = ["ArrayWriter", "DTYPES", "TeacherCache", "from_numpy", "to_numpy"]
