"""One module per source toolbox; each has ``matches(data) -> bool`` and ``translate(data) -> dict``.

The public entry points are in :mod:`kdforge.config.translate`.
"""
from __future__ import annotations

from types import ModuleType

from . import mdistiller, mmrazor, mslim, torchdistill, united_perception
from .common import TranslationError, TranslationWarning

#: source name → translator module, in detection order
TRANSLATORS: dict[str, ModuleType] = {
    "united_perception": united_perception,
    "mslim": mslim,
    "mmrazor": mmrazor,
    "torchdistill": torchdistill,
    "mdistiller": mdistiller,
}

__all__ = ["TRANSLATORS", "TranslationError", "TranslationWarning"]
