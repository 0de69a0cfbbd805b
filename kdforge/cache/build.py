"""``build_cache``: run a config's teachers once over K augmented views of the training set, store the
views' parameters and the tapped teacher tensors (``kdforge cache build`` calls it).

The build is atomic: everything is written into ``DIR.tmp-<pid>`` next to ``DIR`` and the finished
directory replaces ``DIR`` by a rename, after ``manifest.json`` (the completeness marker) is in it.
A crash leaves ``DIR`` as it was (or absent) and a ``.tmp-`` directory that nothing reads. It runs in
one process; training under ``torchrun`` then reads the finished cache from every rank.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from ..capture import Tapper
from ..config.run import RunConfig, load_run_config
from ..data.transforms import concat_params
from ..job import SELF, build_loss
from ..teacher_exec import TeacherRunner, to_plain
from .manifest import (FORMAT, FORMAT_VERSION, CacheError, dataset_fingerprint, kdforge_version, teacher_fingerprint,
                       write_manifest)
from .replay import fetch, find_transform
from .store import DTYPES, ArrayWriter, TeacherCache, to_numpy
from . import topk as topk_mod

PROBE = 4            # samples whose view-0 inputs are kept to check replay at start-up
WARN_BYTES = 2 << 30  # say so before writing more than this


def needed_taps(cfg: RunConfig) -> dict[str, list[str]]:
    """``{teacher: [tap, …]}`` the run's jobs read from each (real) teacher."""
    names = list(cfg.teachers)
    out: dict[str, list[str]] = {}
    for job in cfg.jobs:
        for n in job.teachers or names or [SELF]:
            if n == SELF:
                continue
            taps = out.setdefault(n, [])
            for t in [*job.teacher, *([""] if job.combine == "confidence" else [])]:
                if t not in taps:
                    taps.append(t)
    return out


def check_cacheable(cfg: RunConfig) -> None:
    """Refuse jobs whose loss needs the teacher model itself (``needs_teacher_model``: MGD, OFD without
    given margins): a cache holds tensors, not the model."""
    for i, job in enumerate(cfg.jobs):
        if any(n != SELF for n in job.teachers or list(cfg.teachers)):
            loss = build_loss(job.loss)
            if getattr(loss, "needs_teacher_model", False):
                raise CacheError(f"job {job.name or f'job{i}'!r}: loss {type(loss).__name__} needs the teacher model "
                                 f"itself (not only its tensors), so it cannot train from a teacher cache; train it "
                                 f"with the live teacher (no teacher_cache)")


def _softmax_only(cfg: RunConfig) -> dict[tuple[str, str], list[tuple[str, bool]]]:
    """``{(teacher, tap): [(job name, loss sees it only through softmax), …]}``."""
    out: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for i, job in enumerate(cfg.jobs):
        loss = build_loss(job.loss)
        for n in job.teachers or list(cfg.teachers):
            for t in job.teacher:
                out.setdefault((n, t), []).append((job.name or f"job{i}", bool(getattr(loss, "teacher_via_softmax", False))))
            if job.combine == "confidence":  # the teachers' logits pick a teacher per sample: argmax-safe
                out.setdefault((n, ""), []).append((job.name or f"job{i}", True))
    return out


def rebuild_command(config: str | Path | None, views: int | None, out: str | Path, topk: int | None = None,
                    dtype: str = "fp16", sets: list[str] | None = None) -> str:
    parts = ["kdforge cache build", str(config) if config else "CONFIG", f"--views {views if views else 'K'}",
             f"--out {out}"]
    if topk:
        parts.append(f"--topk {topk}")
    if dtype != "fp16":
        parts.append(f"--dtype {dtype}")
    parts += [f"--set {s}" for s in sets or []]
    return " ".join(parts)


def _view_seed(seed: int, view: int) -> int:
    return (seed * 1_000_003 + view * 7919 + 17) % (2**63)


def _check_args(views: int, topk: int | None, dtype: str) -> None:
    if not isinstance(views, int) or views < 1:
        raise CacheError(f"--views must be an integer >= 1 (the number of augmented views stored per sample), got {views!r}")
    if topk is not None and (not isinstance(topk, int) or topk < 1):
        raise CacheError(f"--topk must be an integer >= 1 (or 'all' for whole logits), got {topk!r}")
    if dtype not in DTYPES:
        raise CacheError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def _say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def build_cache(config: str | Path | Mapping[str, Any] | RunConfig, views: int, out: str | Path | None = None,
                topk: int | None = None, dtype: str = "fp16", overrides: list[str] | None = None,
                batch_size: int | None = None, verbose: bool = True) -> Path:
    """Build a teacher cache for ``config`` and return its directory (module docstring).

    ``views``: K augmented views per sample (1 = index-only, the same view every epoch); ``out``:
    the directory (default: the config's ``teacher_cache``); ``topk``: store only the k largest teacher
    logits of taps that feed softmax-based losses (None = whole tensors); ``dtype``: storage of
    floats (fp16, bf16, fp32); ``batch_size``: teacher batch (default: the config's eval batch size).
    """
    from ..engine.amp import autocast
    from ..engine.data import build_datasets
    from ..engine.distributed import pick_device
    from ..build import build_model_from_spec
    from ..engine.trainer import seed_everything
    from ..registry import TASKS

    _check_args(views, topk, dtype)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CacheError("run `kdforge cache build` in one process (not under torchrun); training under torchrun "
                         "then reads the finished cache from every rank")
    config_path = str(config) if isinstance(config, (str, Path)) else None
    cfg = load_run_config(dict(config) if isinstance(config, Mapping) else config, overrides)
    target = Path(out) if out is not None else (Path(cfg.teacher_cache) if cfg.teacher_cache else None)
    if target is None:
        raise CacheError("say where the cache goes: --out DIR (or teacher_cache: DIR in the config)")
    rebuild = rebuild_command(config_path, views, target, topk, dtype, overrides)
    taps = needed_taps(cfg)
    check_cacheable(cfg)
    if not taps:
        raise CacheError("the config's jobs read no teacher (no jobs, or only the student's own taps 'self'); "
                         "there is nothing to cache")
    consumers = _softmax_only(cfg)
    seed_everything(cfg.seed)
    task = TASKS.build(cfg.task, **cfg.task_kwargs)
    train_ds, _, collate = build_datasets(cfg.data, cfg.seed)
    collate = collate or getattr(task, "collate_fn", None)
    if collate is None:
        from torch.utils.data import default_collate as collate
    transform = find_transform(train_ds)
    if transform is None and views > 1:
        raise CacheError(f"--views {views}: the training set has no random augmentation (data.augment is off), so "
                         f"all views would be the same; use --views 1")
    n = len(train_ds)  # type: ignore[arg-type]
    if n == 0:
        raise CacheError("the training set is empty; check data.train_subset and data.root")
    device = pick_device(cfg.device, 0)
    teachers: dict[str, nn.Module] = {}
    for name in taps:
        if name not in cfg.teachers:
            raise CacheError(f"a job names teacher {name!r}, which is not in teachers ({list(cfg.teachers)})")
        spec = cfg.teachers[name]  # a teacher with a device of its own runs there (inputs follow it: TeacherRunner)
        teachers[name] = build_model_from_spec(spec, f"teachers.{name}").to(spec.device or device).eval().requires_grad_(False)
    tappers = {name: Tapper(teachers[name], taps[name]) for name in taps}
    # the teachers run as the Distiller runs them live (channels_last, compile, autocast: cfg.teacher_exec)
    runners = {name: TeacherRunner(name, teachers[name], cfg.teacher_exec) for name in taps}
    bs = batch_size or cfg.data.eval_batch_size or cfg.data.batch_size

    def run_batch(indices: list[int]) -> tuple[dict[str, Tensor], Tensor, dict[str, dict[str, Tensor]]]:
        if transform is not None:
            with transform.recording() as drawn:
                items = fetch(train_ds, indices)
            params = concat_params(drawn)
            got = len(next(iter(params.values()))) if params else 0
            if got != len(indices):
                raise CacheError(f"the training set called its transform for {got} views when fetching {len(indices)} "
                                 f"samples; a cache needs exactly one transform call per sample (or one per batch)")
        else:
            items, params = fetch(train_ds, indices), {}
        inputs, _ = task.batch_to(collate(items), device)
        outs: dict[str, dict[str, Tensor]] = {}
        with torch.no_grad(), autocast(cfg.train.amp, device):
            for name in teachers:
                with tappers[name].record() as rec:
                    runners[name](inputs)
                outs[name] = {}
                for t in taps[name]:
                    v = to_plain(rec[t])
                    if not isinstance(v, Tensor):
                        raise CacheError(f"teacher {name!r} tap {t!r} is a {type(v).__name__}; a cache stores tensors "
                                         f"— tap a tensor inside it (e.g. a submodule or a ':return' method)")
                    outs[name][t] = v.detach().float()
        return params, inputs, outs

    # one batch first: shapes, and argument checks that need them — before any expensive work
    torch.manual_seed(_view_seed(cfg.seed, 0))
    params0, _, outs0 = run_batch(list(range(min(bs, n))))
    plan: dict[str, dict[str, Any]] = {}
    for name, by_tap in outs0.items():
        plan[name] = {}
        for i, (t, v) in enumerate(by_tap.items()):
            entry: dict[str, Any] = {"id": str(i), "shape": list(v.shape[1:]), "storage": "full"}
            if topk is not None and v.dim() == 2:
                users = consumers.get((name, t), [])
                raw = [j for j, soft in users if not soft]
                c = v.shape[1]
                if topk > c:
                    raise CacheError(f"--topk {topk} is more than the {c} classes of teacher {name!r} tap {t!r}; use "
                                     f"--topk {c} or less (or --topk all)")
                if raw:
                    _say(f"note: teacher {name!r} tap {t!r} is stored whole: job(s) {raw} read raw logits, not "
                         f"only their softmax", verbose)
                elif topk < c:
                    entry.update(storage="topk", k=topk)
            plan[name][t] = entry
    if topk is not None and not any(e["storage"] == "topk" for p in plan.values() for e in p.values()):
        _say("note: no tap is stored as top-k (only 2-D logits read through a softmax by kd/dkd/dist can be)", verbose)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        w = ArrayWriter(tmp)
        for p, v in params0.items():
            w.create(f"params/{p}", (n, views, *v.shape[1:]), v.numpy().dtype, "raw")
        np_dt = DTYPES[dtype][1]
        for name, p in plan.items():
            for t, e in p.items():
                base = f"{name}/{e['id']}"
                if e["storage"] == "topk":
                    c = e["shape"][-1]
                    w.create(base + ".values", (n, views, e["k"]), np_dt, dtype)
                    w.create(base + ".indices", (n, views, e["k"]), np.int16 if c < 2**15 else np.int32, "raw")
                    w.create(base + ".lse", (n, views), np.float32, "raw")
                else:
                    w.create(base, (n, views, *e["shape"]), np_dt, dtype)
        size = w.nbytes()
        _say(f"building teacher cache {target}: {n} samples × {views} view(s), teachers {list(plan)}, "
             f"{size / 2**20:.1f} MiB on disk", verbose)
        if size > WARN_BYTES:
            _say(f"warning: this cache will take {size / 2**30:.1f} GiB; feature taps dominate — store fewer taps, "
                 f"--dtype fp16/bf16, or --topk for logits", verbose)
        t0 = time.perf_counter()
        probe = None
        from tqdm import tqdm
        bar = tqdm(total=n * views, unit="img", disable=not verbose, desc="teacher cache", file=sys.stderr)
        for view in range(views):
            torch.manual_seed(_view_seed(cfg.seed, view))
            for start in range(0, n, bs):
                rows = slice(start, min(n, start + bs))
                params, inputs, outs = run_batch(list(range(rows.start, rows.stop)))
                for p, v in params.items():
                    w.write(f"params/{p}", rows, view, v.numpy())
                for name, by_tap in outs.items():
                    for t, v in by_tap.items():
                        e, base = plan[name][t], f"{name}/{plan[name][t]['id']}"
                        if e["storage"] == "topk":
                            vals, idx, lse = topk_mod.compress(v, e["k"])
                            w.write(base + ".values", rows, view, to_numpy(vals, dtype))
                            w.write(base + ".indices", rows, view, idx.cpu().numpy())
                            w.write(base + ".lse", rows, view, lse.cpu().numpy())
                        else:
                            w.write(base, rows, view, to_numpy(v, dtype))
                if probe is None:
                    probe = inputs[:PROBE].detach().float().cpu()
                bar.update(rows.stop - rows.start)
        bar.close()
        seconds = time.perf_counter() - t0
        arrays = w.entries
        w.close()
        assert probe is not None
        np.save(tmp / "probe.npy", probe.numpy(), allow_pickle=False)
        for tp in tappers.values():
            tp.close()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kdforge_version": kdforge_version(),
            "views": views, "topk": topk, "dtype": dtype, "seed": cfg.seed, "amp": cfg.train.amp.model_dump(),
            "build_command": rebuild, "build_seconds": round(seconds, 2),
            "dataset": dataset_fingerprint(cfg.data, cfg.seed, n, transform),
            "params": list(params0),
            "teachers": {name: {"fingerprint": teacher_fingerprint(cfg.teachers[name]),
                                "weights_file": _file_info(cfg.teachers[name].weights),
                                "num_params": sum(p.numel() for p in teachers[name].parameters()),
                                "taps": plan[name]} for name in plan},
            "arrays": arrays,
            "probe": {"indices": list(range(min(PROBE, n))), "file": "probe.npy"},
        }
        write_manifest(tmp, manifest)
        _check_replay(tmp, train_ds, rebuild)
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(f"teacher cache written to {target} in {seconds:.1f} s ({size / 2**20:.1f} MiB); train from it with "
         f"teacher_cache: {target}", verbose)
    return target


def _file_info(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _check_replay(directory: Path, train_ds: Any, rebuild: str) -> None:
    """Replay the probe samples' view 0 and compare with what the teacher saw (refuses datasets that draw
    random numbers outside their transform)."""
    from .replay import CachedViews

    cache = TeacherCache(directory, rebuild)
    check_probe(CachedViews(train_ds, cache, seed=0), cache)


def check_probe(views: Any, cache: TeacherCache) -> None:
    """Raise :class:`CacheError` unless replaying the probe samples' view 0 gives the recorded inputs."""
    idx, recorded = cache.probe()
    items, _ = views.replay(idx, [0] * len(idx))
    x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items]).float()
    if x.shape != recorded.shape or not torch.allclose(x, recorded, rtol=1e-5, atol=1e-5):
        raise CacheError(f"replaying the cached views of samples {idx} does not give the inputs the teacher saw at "
                         f"build time: the training data or its augmentation differ from the cache's, or the dataset "
                         f"draws random numbers outside its ReplayableTransform; rebuild the cache: {cache.rebuild}")


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` directory to ``target``, replacing an older cache there."""
    old = None
    if target.exists():
        if not target.is_dir():
            raise CacheError(f"--out {target} exists and is not a directory")
        old = target.parent / f"{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["build_cache", "check_cacheable", "check_probe", "needed_taps", "rebuild_command"]
