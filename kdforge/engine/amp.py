"""Mixed precision: which autocast to use where, and the GradScaler fp16 needs."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from ..config.run import AmpConfig

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AmpError(ValueError):
    """An AMP setting the device cannot run."""


def check_amp(cfg: AmpConfig, device: torch.device) -> None:
    """Raise :class:`AmpError` for fp16 on CPU (CPU autocast runs bf16)."""
    if cfg.enabled and cfg.dtype == "fp16" and device.type != "cuda":
        raise AmpError("train.amp.dtype=fp16 needs a CUDA device; on CPU use train.amp.dtype=bf16 "
                       "(or train.amp.enabled=false)")


def autocast(cfg: AmpConfig, device: torch.device) -> ContextManager[object]:
    """``torch.autocast`` for the device and dtype, or a no-op when AMP is off."""
    if not cfg.enabled:
        return contextlib.nullcontext()
    check_amp(cfg, device)
    return torch.autocast(device_type=device.type, dtype=_DTYPES[cfg.dtype])


def make_scaler(cfg: AmpConfig, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA (bf16 needs none), else ``None``."""
    if cfg.enabled and cfg.dtype == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
