"""What the teacher-output cache buys on the demo pair (configs/fmnist/kd.yaml: cnn [32,64,128] → [8,16,32]).

Three parts, each optional (``--parts``), all in one process, results appended to ``OUT/results.json``:

* ``builds``: ``build_cache`` for every K in ``--views`` and top-k in ``--topk`` (all = whole logits):
  build time and size on disk (one build each: a build is minutes, its noise is small);
* ``epochs``: one training epoch of the baseline student (configs/fmnist/baseline.yaml), of the KD
  student from the cache and of the KD student with the live teacher, interleaved ``--repeats`` times;
  medians of the trainer's ``epoch_time`` (the training loop only, data loading included) and the ratios
  cached / baseline and live / cached;
* ``accuracy``: full 5-epoch runs per seed — live KD, and KD from each cache in ``--acc-views`` (K = 1 is
  index-only replay, torchdistill-style; K >= 4 cycles through stored views) — final test top-1 per
  seed with mean ± std.

    python benchmarks/cache.py --teacher runs/fmnist_teacher/best.pt --parts builds,epochs,accuracy
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
    path = out / "results.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res[key] = value
    path.write_text(json.dumps(res, indent=2))


def _cache_dir(out: Path, views: int, topk: int | None) -> Path:
    return out / f"cache_k{views}_{'all' if topk is None else f'top{topk}'}"


def builds(a: argparse.Namespace, common: list[str]) -> list[dict[str, Any]]:
    rows = []
    for topk in a.topk:
        for views in a.views:
            d = _cache_dir(a.out, views, topk)
            t = time.perf_counter()
            build_cache(KD, views, d, topk=topk, overrides=common, batch_size=a.build_batch, verbose=False)
            wall = time.perf_counter() - t
            c = TeacherCache(d)
            rows.append({"views": views, "topk": topk or "all", "build_s": round(wall, 1),
                         "teacher_pass_s": c.manifest["build_seconds"], "bytes": c.nbytes()})
            print(f"build K={views} top-k={topk or 'all'}: {wall:.1f} s, {c.nbytes() / 2**20:.2f} MiB", flush=True)
            _save(a.out, "builds", rows)
    return rows


def _epoch(config: Path, overrides: list[str], out: Path) -> float:
    s = train(config, [*overrides, "train.epochs=1", "data.test_subset=500", f"output_dir={out}",
                       "checkpoint.keep_best=false"], verbose=False)
    del s
    import csv
    with open(out / "metrics.csv") as f:
        return float(list(csv.DictReader(f))[-1]["epoch_time"])


def epochs(a: argparse.Namespace, common: list[str]) -> dict[str, Any]:
    cache = _cache_dir(a.out, a.epoch_views, None)
    if not (cache / "manifest.json").exists():
        build_cache(KD, a.epoch_views, cache, overrides=common, batch_size=a.build_batch, verbose=False)
    variants = {"baseline": (BASELINE, [f"data.root={a.data}"] if a.data else []),
                "cached": (KD, [*common, f"teacher_cache={cache}"]),
                "live": (KD, common)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.repeats):
        for name, (cfg, ov) in variants.items():
            times[name].append(_epoch(cfg, ov, a.out / "epochs" / f"{name}_{r}"))
            print(f"repeat {r + 1}/{a.repeats} {name}: {times[name][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"repeats": a.repeats, "epoch_s": times, "median_s": med,
           "cached_over_baseline": med["cached"] / med["baseline"], "live_over_cached": med["live"] / med["cached"]}
    print(f"median epoch: baseline {med['baseline']:.1f} s, cached KD {med['cached']:.1f} s, live KD {med['live']:.1f} s; "
          f"cached/baseline {res['cached_over_baseline']:.3f}, live/cached {res['live_over_cached']:.2f}", flush=True)
    _save(a.out, "epochs", res)
    return res


def accuracy(a: argparse.Namespace, common: list[str]) -> dict[str, Any]:
    caches = {}
    for views in a.acc_views:
        d = _cache_dir(a.out, views, None)
        if not (d / "manifest.json").exists():
            build_cache(KD, views, d, overrides=common, batch_size=a.build_batch, verbose=False)
        caches[f"cached_K{views}"] = d
    variants = {"live": common, **{k: [*common, f"teacher_cache={d}"] for k, d in caches.items()}}
    res: dict[str, Any] = {"seeds": [], **{k: [] for k in variants}, **{f"{k}_train_s": [] for k in variants}}
    for seed in a.seeds:
        res["seeds"].append(seed)
        for name, ov in variants.items():
            s = train(KD, [*ov, f"seed={seed}", f"output_dir={a.out / 'acc' / name / f'seed{seed}'}"], verbose=False)
            res[name].append(s["final"]["top1"])
            res[f"{name}_train_s"].append(round(s["train_time_s"], 1))
            print(f"seed {seed} {name}: top-1 {s['final']['top1']:.2f} ({s['train_time_s']:.0f} s)", flush=True)
            _save(a.out, "accuracy", res)
    for name in variants:
        v = res[name]
        if len(v) > 1:
            print(f"{name}: {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} over seeds {res['seeds']} ({v})")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher weights (a kdforge checkpoint of configs/fmnist/teacher.yaml)")
    ap.add_argument("--data", help="Fashion-MNIST directory (default: the usual places)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_cache"))
    ap.add_argument("--parts", default="builds,epochs,accuracy")
    ap.add_argument("--views", default="1,4,8")
    ap.add_argument("--topk", default="all,5")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epoch-views", type=int, default=8, help="K of the cache the epoch timing reads")
    ap.add_argument("--acc-views", default="1,8")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--build-batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.views = [int(v) for v in a.views.split(",")]
    a.topk = [None if k == "all" else int(k) for k in a.topk.split(",")]
    a.acc_views = [int(v) for v in a.acc_views.split(",")]
    a.seeds = [int(s) for s in a.seeds.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    common = [f"teachers.teacher.weights={a.teacher}", *([f"data.root={a.data}"] if a.data else [])]
    print(f"torch {torch.__version__}, {a.threads} thread(s); {' '.join(sys.argv[1:])}", flush=True)
    for part in a.parts.split(","):
        {"builds": builds, "epochs": epochs, "accuracy": accuracy}[part](a, common)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
