"""The cache manifest: what a teacher cache was built from, and the checks that refuse a stale one.

``DIR/manifest.json`` is written last, atomically, with ``"complete": true``; a directory without it
(or with a damaged one) is an interrupted build and is refused. The manifest records the format
version, the kdforge version, K (views), k (top-k) and the storage dtype, the dataset (name, length,
subset/split settings, the augmentation's :meth:`~kdforge.data.ReplayableTransform.spec`), and per
teacher its model, kwargs, the SHA-256 of its weights file and the stored taps. A run compares its own
fingerprint with it (:func:`differences`) and names every field that differs, with the rebuild command.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping

FORMAT = "kdforge-teacher-cache"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class CacheError(ValueError):
    """A teacher cache that cannot serve this run (missing, incomplete, stale) or bad cache arguments."""


def kdforge_version() -> str:
    from .. import __version__
    return __version__


# ------------------------------------------------------------------------------------ fingerprints
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_fingerprint(path: str | None, known: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"sha256"}`` of a weights file (``None`` → untrained teacher). When ``known`` (a
    manifest entry) has the same size and modification time, its hash is reused instead of re-reading
    a large file."""
    if not path:
        return {"sha256": None}
    p = Path(path)
    if not p.is_file():
        raise CacheError(f"teacher weights {path!r} do not exist")
    st = p.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns \
            and known.get("path") == str(p.resolve()):
        return {"sha256": known.get("sha256")}
    return {"sha256": file_sha256(p)}


def teacher_fingerprint(spec: Any) -> dict[str, Any]:
    """What identifies a teacher (a :class:`~kdforge.config.ModelSpec`): model, kwargs, weights hash."""
    return {"model": spec.name, "kwargs": spec.kwargs, "weights_key": spec.weights_key,
            "dtype": getattr(spec, "dtype", None),  # absent (None) in caches built before teachers had a dtype
            **weights_fingerprint(spec.weights)}


def dataset_fingerprint(data_cfg: Any, seed: int, length: int, transform: Any) -> dict[str, Any]:
    """What identifies the training set and its augmentation (a :class:`~kdforge.config.run.DataConfig`)."""
    return {"name": data_cfg.name, "length": int(length), "train_subset": data_cfg.train_subset,
            "val_fraction": data_cfg.val_fraction,
            "split_seed": seed if data_cfg.val_fraction > 0 else None,  # the split depends on the run seed
            "augment": data_cfg.augment, "kwargs": data_cfg.kwargs,
            "transform": transform.spec() if transform is not None else None}


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v))  # tuples → lists, keys → str: compare as they are stored


def differences(built: Mapping[str, Any], now: Mapping[str, Any], where: str) -> list[str]:
    """Lines ``where.field: cache X, this run Y`` for every field of two fingerprints that differs."""
    out = []
    for key in sorted(set(built) | set(now)):
        a, b = _norm(built.get(key)), _norm(now.get(key))
        if a != b:
            if key == "sha256":
                out.append(f"{where}: the weights file changed (cache sha256 {str(a)[:12]}…, this run "
                           f"{str(b)[:12] + '…' if b else 'no weights'})")
            else:
                out.append(f"{where}.{key}: cache {a!r}, this run {b!r}")
    return out


# ----------------------------------------------------------------------------------- reading/writing
def read_manifest(directory: str | Path, rebuild: str) -> dict[str, Any]:
    """The manifest of a complete cache, or :class:`CacheError` saying why it cannot be used."""
    d = Path(directory)
    if not d.is_dir():
        raise CacheError(f"teacher cache {str(d)!r} does not exist; build it: {rebuild}")
    path = d / MANIFEST
    if not path.is_file():
        raise CacheError(f"teacher cache {str(d)!r} is incomplete (no {MANIFEST}: its build was interrupted or is "
                         f"still running); rebuild it: {rebuild}")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CacheError(f"{path} is damaged ({e}); rebuild the cache: {rebuild}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CacheError(f"{str(d)!r} is not a kdforge teacher cache (bad {MANIFEST}); rebuild it: {rebuild}")
    if m.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"teacher cache {str(d)!r} has format version {m.get('format_version')}, this kdforge "
                         f"({kdforge_version()}) reads version {FORMAT_VERSION}; rebuild it: {rebuild}")
    if m.get("complete") is not True:
        raise CacheError(f"teacher cache {str(d)!r} is incomplete (its build did not finish); rebuild it: {rebuild}")
    return m


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temp file + rename), marking the cache complete."""
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({**manifest, "complete": True, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                       time.gmtime())}, indent=2))
    os.replace(tmp, directory / MANIFEST)


__all__ = ["CacheError", "FORMAT", "FORMAT_VERSION", "MANIFEST", "dataset_fingerprint", "differences",
           "file_sha256", "read_manifest", "teacher_fingerprint", "weights_fingerprint", "write_manifest"]
