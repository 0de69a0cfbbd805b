"""Checkpoints: atomic writes, RNG states as tensors (so ``weights_only=True`` loads them), and resume.

A kdforge checkpoint is a dict::

    {"format": "kdforge-checkpoint", "version": 1, "epoch": completed epochs, "global_step": int,
     "student": student state dict,         # load_weights(model, path) picks this one
     "state": distiller (or model) state dict — student, connectors, loss buffers, step counter,
     "optimizer": ..., "scheduler": ..., "scaler": ... or None, "rng": {...},
     "best": {"metric": str, "value": float, "epoch": int} or None, "config": RunConfig as JSON}
"""
from __future__ import annotations

import contextlib
import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

FORMAT, VERSION = "kdforge-checkpoint", 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the run being resumed."""


class DiskFullError(CheckpointError):
    """A checkpoint write failed because the disk is full (or over quota); the previous file is intact."""


#: errno values that mean "the disk is full" (ENOSPC; EDQUOT: over quota)
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


# --------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain types."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (e.g. a dry run) without disturbing any global RNG stream."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


# ------------------------------------------------------------------------------------------- files
def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give checkpoints the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
            raise DiskFullError(f"the disk is full: could not write {path} ({e.strerror or 'no space left'}); {kept} "
                                f"(checkpoints are written to a temporary file and renamed). Free some space and "
                                f"continue with --resume") from None
        raise
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a kdforge checkpoint with ``weights_only=True``; :class:`CheckpointError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; resume from a run directory's last.pt "
                              f"(written at the end of each epoch), or start the run again: without --resume, and with "
                              f"--overwrite if its directory already holds files of the interrupted run")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling/zip errors come in many types
        text = str(e)
        if "weights only" in text.lower() or "weights_only" in text:  # never repeat torch's "weights_only=False"
            raise CheckpointError(f"{path} holds Python objects besides tensors and plain containers; kdforge never "
                                  f"unpickles such files (they can run code). It was not written by kdforge's "
                                  f"trainer: resume only from a run directory's last.pt / epoch_*.pt") from None
        first = text.splitlines()[0][:300] if text else repr(e)[:300]
        raise CheckpointError(f"cannot read checkpoint {path}: {first}. It is damaged (e.g. truncated) or not a "
                              f"file written by kdforge; resume from another checkpoint of the run "
                              f"(epoch_*.pt) or start again with --overwrite") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a kdforge training checkpoint (a plain state dict can be used as "
                              f"model weights: model.weights / --weights, but not to resume training)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer kdforge (format version {ckpt['version']})")
    return ckpt


def load_module_state(module: nn.Module, state: dict[str, Any], path: str | Path, what: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches (checkpoint vs run)", shapes)):
            if items:
                more = f", … ({len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise CheckpointError(f"checkpoint {path} does not fit this run's {what}: {'; '.join(parts)}. "
                              f"Was it written by a run with a different model, teachers or jobs? Resume with "
                              f"the config that wrote it, or start a fresh run (another output_dir).")
    module.load_state_dict(state, strict=True)
