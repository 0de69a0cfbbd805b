"""Shared helpers of the performance benchmarks: interleaved timing, medians, the previous release.

Every benchmark runs its variants in one process, one thread, round-robin (A, B, C, A, B, C, ...) and
reports medians and ratios: the machines we measure on are shared, and interleaving makes load that
comes and goes hit every variant alike, so it cancels in the ratios (absolute times do not).
"""
from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
#: the release before the fast-by-default work (git main at issue #14)
PREVIOUS_RELEASE = "81ddfe3"


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per call of each function, called round-robin ``repeats`` times after ``warmup`` calls."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def previous_release(ref: str = PREVIOUS_RELEASE, name: str = "kdforge_old"):  # type: ignore[no-untyped-def]
    """The ``kdforge`` package at git ``ref``, importable next to the current one as ``name``.

    Extracted with ``git archive`` into a temporary directory (its imports are relative, so the
    renamed copy is self-contained; its registries are its own).
    """
    if name in sys.modules:
        return sys.modules[name]
    dest = Path(tempfile.mkdtemp(prefix="kdforge_old_"))
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "kdforge"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    (dest / "kdforge").rename(dest / name)
    sys.path.insert(0, str(dest))
    return importlib.import_module(name)
