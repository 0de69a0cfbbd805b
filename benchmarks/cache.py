"""What the teacher-output cache buys on the demo pair (configs/fmnist/kd.yaml: cnn [32,64,128] → [8,16,32]).

Steps (``--parts``), run in order in one process, results merged into ``OUT/results.json``:

* ``build:K:k``: ``build_cache`` with K views and top-k k (all = whole logits): build time and size on
  disk (one build each: a build is minutes, its noise is small);
* ``epochs``: one training epoch of the baseline student (configs/fmnist/baseline.yaml), of the KD
  student from the cache and of the KD student with the live teacher, interleaved ``--repeats`` times;
  medians of the trainer's ``epoch_time`` (the training loop only, data loading included) and the ratios
  cached / baseline and live / cached;
* ``acc:1+4+live``: full 5-epoch KD runs, interleaved by seed, from whole-logit caches with K views
  (K = 1 is index-only replay, torchdistill-style; K >= 4 cycles through stored views) and with the
  live teacher — final test top-1 per seed (mean ± std printed).

    python benchmarks/cache.py --teacher runs/fmnist_teacher/best.pt
    python benchmarks/cache.py --teacher runs/fmnist_teacher/best.pt --parts epochs --epoch-subset 20000
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from kdforge.cache import TeacherCache, build_cache
from kdforge.engine import train

ROOT = Path(__file__).resolve().parents[1]
KD, BASELINE = ROOT / "configs/fmnist/kd.yaml", ROOT / "configs/fmnist/baseline.yaml"


def _save(out: Path, key: str, value: Any) -> None:
    res = _load(out)
    res[key] = value
    (out / "results.json").write_text(json.dumps(res, indent=2))


def _cache_dir(out: Path, views: int, topk: int | None) -> Path:
    return out / f"cache_k{views}_{'all' if topk is None else f'top{topk}'}"


def build(a: argparse.Namespace, common: list[str], views: int, topk: int | None) -> dict[str, Any]:
    d = _cache_dir(a.out, views, topk)
    t = time.perf_counter()
    build_cache(KD, views, d, topk=topk, overrides=common, batch_size=a.build_batch, verbose=False)
    wall = time.perf_counter() - t
    c = TeacherCache(d)
    row = {"views": views, "topk": topk or "all", "build_s": round(wall, 1),
           "teacher_pass_s": c.manifest["build_seconds"], "bytes": c.nbytes()}
    print(f"build K={views} top-k={topk or 'all'}: {wall:.1f} s, {c.nbytes() / 2**20:.2f} MiB", flush=True)
    rows = _load(a.out).get("builds", [])
    _save(a.out, "builds", [r for r in rows if (r["views"], r["topk"]) != (views, topk or "all")] + [row])
    return row


def _pair_sets(config: Path, pair: str) -> list[str]:
    """The overrides that move ``config`` to the pair (none for the demo CNN pair: the configs' own)."""
    from kdforge.config.loading import read_config

    if str(ROOT / "benchmarks") not in sys.path:  # run as a script it is already there (sys.path[0])
        sys.path.insert(0, str(ROOT / "benchmarks"))
    from zoo import pair_overrides

    return pair_overrides(read_config(config), pair)


def _load(out: Path) -> dict[str, Any]:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _epoch(config: Path, overrides: list[str], out: Path) -> float:
    train(config, [*overrides, "train.epochs=1", "data.test_subset=500", f"output_dir={out}",
                   "checkpoint.keep_best=false"], verbose=False)
    import csv
    with open(out / "metrics.csv") as f:
        return float(list(csv.DictReader(f))[-1]["epoch_time"])


def epochs(a: argparse.Namespace, common: list[str]) -> dict[str, Any]:
    subset = [f"data.train_subset={a.epoch_subset}"] if a.epoch_subset else []
    cache = a.out / f"cache_epochs_k{a.epoch_views}"
    if not (cache / "manifest.json").exists():
        build_cache(KD, a.epoch_views, cache, overrides=[*common, *subset], batch_size=a.build_batch, verbose=False)
    variants = {"baseline": (BASELINE, [*subset, *([f"data.root={a.data}"] if a.data else []), *a.base_sets]),
                "cached": (KD, [*common, *subset, f"teacher_cache={cache}"]),
                "live": (KD, [*common, *subset])}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.repeats):
        for name, (cfg, ov) in variants.items():
            times[name].append(_epoch(cfg, ov, a.out / "epochs" / f"{name}_{r}"))
            print(f"repeat {r + 1}/{a.repeats} {name}: {times[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"repeats": a.repeats, "train_subset": a.epoch_subset, "epoch_s": times, "median_s": med,
           "cached_over_baseline": med["cached"] / med["baseline"], "live_over_cached": med["live"] / med["cached"]}
    print(f"median epoch: baseline {med['baseline']:.1f} s, cached KD {med['cached']:.1f} s, live KD {med['live']:.1f} s; "
          f"cached/baseline {res['cached_over_baseline']:.3f}, live/cached {res['live_over_cached']:.2f}", flush=True)
    _save(a.out, "epochs", res)
    return res


def accuracy(a: argparse.Namespace, common: list[str], variants: list[int | None]) -> dict[str, Any]:
    """Full runs, interleaved by seed, of live KD (``None`` in ``variants``) and KD from the whole-logit
    cache with K views for each K in ``variants``."""
    runs: dict[str, list[str]] = {}
    for views in variants:
        if views is None:
            runs["live"] = list(common)
            continue
        d = _cache_dir(a.out, views, None)
        if not (d / "manifest.json").exists():
            build(a, common, views, None)
        runs[f"cached_K{views}"] = [*common, f"teacher_cache={d}"]
    res = _load(a.out).get("accuracy", {})
    for seed in a.seeds:
        for name, ov in runs.items():
            s = train(KD, [*ov, f"seed={seed}", f"output_dir={a.out / 'acc' / name / f'seed{seed}'}"], verbose=False)
            res.setdefault(name, {})[str(seed)] = {"top1": s["final"]["top1"], "train_s": round(s["train_time_s"], 1)}
            print(f"seed {seed} {name}: top-1 {s['final']['top1']:.2f} ({s['train_time_s']:.0f} s)", flush=True)
            _save(a.out, "accuracy", res)
    for name in runs:
        v = [r["top1"] for r in res[name].values()]
        if len(v) > 1:
            print(f"{name}: {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} over seeds {list(res[name])} ({v})",
                  flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher weights (a kdforge checkpoint of configs/fmnist/teacher.yaml)")
    ap.add_argument("--data", help="Fashion-MNIST directory (default: the usual places)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_cache"))
    ap.add_argument("--parts", default="build:1:all,epochs,build:4:all,build:8:all,build:1:5,build:4:5,build:8:5,"
                                       "acc:1+4+live",
                    help="comma-separated steps, run in order: build:K:k (k = all or a number), epochs, and acc:V+V+… "
                         "(V = K of a whole-logit cache, or live; runs interleaved by seed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epoch-views", type=int, default=1, help="K of the cache the epoch timing reads (the cost per "
                                                               "step does not depend on K)")
    ap.add_argument("--epoch-subset", type=int, default=None, help="time epochs on the first N training samples")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--build-batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pair", choices=["cnn", "resnet"], default="cnn",
                    help="the demo CNN pair, or resnet8x4 ← resnet32x4 (benchmarks/zoo.py's pairs; --teacher is then "
                         "a checkpoint of configs/fmnist/teacher_resnet32x4.yaml)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    a.base_sets = _pair_sets(BASELINE, a.pair)
    common = [f"teachers.teacher.weights={a.teacher}", *([f"data.root={a.data}"] if a.data else []),
              *_pair_sets(KD, a.pair)]
    print(f"torch {torch.__version__}, {a.threads} thread(s); {' '.join(sys.argv[1:])}", flush=True)
    for part in a.parts.split(","):
        kind, *args = part.split(":")
        if kind == "build":
            build(a, common, int(args[0]), None if args[1] == "all" else int(args[1]))
        elif kind == "epochs":
            epochs(a, common)
        elif kind == "acc":
            accuracy(a, common, [None if v == "live" else int(v) for v in args[0].split("+")])
        else:
            raise SystemExit(f"unknown part {part!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
