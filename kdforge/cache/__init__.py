"""Teacher-output cache: distil at the cost of training the student alone.

The teacher never changes during distillation, yet a live run recomputes its forward pass on every
step of every epoch. A cache runs the teacher(s) once over K augmented *views* of each training
sample and stores, per sample and view, the augmentation parameters that produced the view and the
teacher's tapped tensors. Training with ``teacher_cache: DIR`` then replays, each epoch, one stored
view per sample — the student sees exactly the pixels the teacher saw — and feeds the cached tensors to
the Distiller through ``teacher_outputs=``; the teacher is not built.

    kdforge cache build configs/fmnist/kd.yaml --views 8 --out runs/cache/fmnist_kd
    kdforge train configs/fmnist/kd.yaml --set teacher_cache=runs/cache/fmnist_kd

>>> from kdforge.cache import build_cache
>>> build_cache("configs/fmnist/kd.yaml", views=8, out="runs/cache/fmnist_kd", topk=5)

Modules: :mod:`~kdforge.cache.build` (the build), :mod:`~kdforge.cache.manifest` (what a cache was
built from; stale caches are refused naming what differs), :mod:`~kdforge.cache.store` (memory-mapped
``.npy`` arrays), :mod:`~kdforge.cache.replay` (view schedule, replaying dataset),
:mod:`~kdforge.cache.topk` (top-k logits, tail renormalisation and its error bound). Augmentations
become cacheable as :class:`kdforge.data.ReplayableTransform`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .build import build_cache, check_cacheable, check_probe, needed_taps, rebuild_command
from .manifest import CacheError, dataset_fingerprint, differences, weights_fingerprint
from .replay import CachedBatch, CachedCollate, CachedViews, find_transform, view_schedule
from .store import TeacherCache


def _rebuild_hint(directory: Path, config_path: str | Path | None) -> str:
    try:
        from .manifest import read_manifest
        m = read_manifest(directory, "")
        return rebuild_command(config_path, m.get("views"), directory, m.get("topk"), m.get("dtype", "fp16"))
    except CacheError:
        return rebuild_command(config_path, None, directory)


def _fail(directory: Path, problems: list[str], rebuild: str) -> None:
    if problems:
        raise CacheError(f"teacher cache {str(directory)!r} does not match this run:\n  " + "\n  ".join(problems)
                         + f"\nrebuild it: {rebuild}")


def open_cache(cfg: Any, config_path: str | Path | None = None) -> TeacherCache:
    """Open ``cfg.teacher_cache`` and check it against the run's teachers and jobs, before any data is read:
    the same teacher weights (by content), every tap the jobs read (whole where a loss reads raw logits),
    no loss that needs the teacher model. Raises :class:`CacheError` naming each difference and the
    command that rebuilds the cache."""
    directory = Path(cfg.teacher_cache)
    rebuild = _rebuild_hint(directory, config_path)
    check_cacheable(cfg)
    cache = TeacherCache(directory, rebuild)
    m = cache.manifest
    problems: list[str] = []
    from .build import _softmax_only
    consumers = _softmax_only(cfg)
    for name, wanted in needed_taps(cfg).items():
        entry = m["teachers"].get(name)
        if entry is None:
            problems.append(f"teachers.{name}: not in the cache (it holds {list(m['teachers'])})")
            continue
        if name not in cfg.teachers:
            continue
        spec = cfg.teachers[name]
        known = {**(entry.get("weights_file") or {}), "sha256": entry["fingerprint"].get("sha256")}
        fp_now = {**entry["fingerprint"], "model": spec.name, "kwargs": spec.kwargs, "weights_key": spec.weights_key,
                  "dtype": spec.dtype, **weights_fingerprint(spec.weights, known)}
        problems += differences(entry["fingerprint"], fp_now, f"teachers.{name}")
        missing = [t for t in wanted if t not in entry["taps"]]
        if missing:
            problems.append(f"teachers.{name}: the jobs tap {missing}, the cache holds {list(entry['taps'])}")
        for t in wanted:
            e = entry["taps"].get(t)
            raw = [j for j, soft in consumers.get((name, t), []) if not soft]
            if e is not None and e["storage"] == "topk" and raw:
                problems.append(f"teachers.{name} tap {t!r} is cached as top-{e['k']} logits but job(s) {raw} read raw "
                                f"logits; rebuild without --topk")
    _fail(directory, problems, rebuild)
    return cache


def replay_views(cfg: Any, cache: TeacherCache, train_ds: Any) -> CachedViews:
    """The run's training set replaying the cache's views, after checking that it is the dataset and the
    augmentation the cache was built from and that replaying view 0 of a few samples gives the inputs the
    teacher saw."""
    transform = find_transform(train_ds)
    problems = differences(cache.manifest["dataset"],
                           dataset_fingerprint(cfg.data, cfg.seed, len(train_ds), transform), "data")
    _fail(cache.directory, problems, cache.rebuild)
    views = CachedViews(train_ds, cache, cfg.seed, needed_taps(cfg))
    check_probe(views, cache)
    return views


def open_for_run(cfg: Any, train_ds: Any, config_path: str | Path | None = None) -> tuple[TeacherCache, CachedViews]:
    """:func:`open_cache` then :func:`replay_views` (what the trainer does)."""
    cache = open_cache(cfg, config_path)
    return cache, replay_views(cfg, cache, train_ds)


__all__ = ["CacheError", "CachedBatch", "CachedCollate", "CachedViews", "TeacherCache", "build_cache",
           "find_transform", "open_cache", "open_for_run", "replay_views", "view_schedule"]
