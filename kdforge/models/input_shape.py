"""What input a model expects, learnt from the model's own metadata where it has some.

* timm models carry ``pretrained_cfg`` / ``default_cfg`` with ``input_size`` (C, H, W) — also any
  module that copies that convention;
* torchvision classification weights enums carry the evaluation crop size
  (``get_model_weights(name).DEFAULT.transforms().crop_size``; metadata only, nothing is downloaded);
  segmentation weights carry a resize size;
* otherwise nothing is known: :func:`default_input_shape` falls back to ``(in_channels, 32, 32)``
  and says so, so callers can tell the user to pass a shape.
"""
from __future__ import annotations

from typing import Any

from torch import nn


def _from_cfg(model: nn.Module) -> tuple[int, ...] | None:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)) and len(size) >= 2 and all(isinstance(v, int) for v in size):
            return tuple(size)
    return None


def _from_torchvision(name: str) -> tuple[int, ...] | None:
    try:
        from torchvision.models import get_model_weights

        tf = get_model_weights(name).DEFAULT.transforms()
    except Exception:  # no such model, no weights enum, or torchvision missing/broken
        return None
    for attr in ("crop_size", "resize_size"):
        size = getattr(tf, attr, None)
        if isinstance(size, (list, tuple)) and size:
            h = int(size[0])
            w = int(size[1]) if len(size) > 1 else h
            return (3, h, w)
    return None


def learned_input_shape(name: str, model: nn.Module) -> tuple[tuple[int, ...], str] | None:
    """``(C, H, W), where it came from`` for a model built from spec ``name``, or ``None``."""
    shape = _from_cfg(model)
    if shape is not None:
        return shape, "the model's pretrained_cfg (timm)" if name.startswith("timm:") else "the model's default_cfg"
    if name.startswith("torchvision:"):
        shape = _from_torchvision(name.partition(":")[2])
        if shape is not None:
            return shape, "torchvision's weights metadata"
    return None


def default_input_shape(name: str, model: nn.Module, kwargs: dict[str, Any] | None = None,
                        fallback_hw: tuple[int, int] = (32, 32)) -> tuple[tuple[int, ...], str | None]:
    """The learnt shape and its source, or ``((in_channels, *fallback_hw), None)`` when the model says nothing."""
    learned = learned_input_shape(name, model)
    if learned is not None:
        return learned
    return (int((kwargs or {}).get("in_channels", 3)), *fallback_hw), None


__all__ = ["default_input_shape", "learned_input_shape"]
