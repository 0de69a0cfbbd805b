"""The main job (``make demo``): teacher → baseline student → distilled student on Fashion-MNIST.

Trains the teacher once, runs it once over ``--views`` augmented views of the training set into a
teacher-output cache (``kdforge cache build``), then for each seed trains the student alone (baseline)
and the same student with KD from the cached teacher (``teacher_cache:``; the teacher is not run
again), all through the ordinary trainer and the configs in ``configs/fmnist/``; prints the comparison
table (params, MACs, test accuracy, train time, delta vs baseline), writes a PNG of the accuracy
curves and, for several seeds, the mean ± std of the final test accuracy.

    python -m kdforge.demo                      # one seed
    python -m kdforge.demo --seeds 0,1,2        # the README's numbers
    python -m kdforge.demo --live               # KD with the live teacher (no cache), as before
    python -m kdforge.demo --data DIR           # IDX files somewhere else
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fmnist"


def _run(config: str, out: Path, seed: int, extra: list[str], quiet: bool) -> dict[str, Any]:
    from .engine import train

    overrides = [f"seed={seed}", f"output_dir={out}", *extra]
    print(f"\n=== {config} (seed {seed}) → {out}", flush=True)
    # the demo owns its run directories: a second `make demo` replaces its earlier runs
    return train(CONFIGS / config, overrides, overwrite=True, verbose=not quiet)


def _final(summary: dict[str, Any]) -> float:
    return float(summary["final"][summary["main_metric"]])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdforge.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--data", metavar="DIR", help="directory with the Fashion-MNIST IDX files")
    ap.add_argument("--out", default="runs/demo", help="where the runs go (default runs/demo)")
    ap.add_argument("--seeds", default="0", help="student seeds, comma-separated (default 0)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to all three runs, e.g. --set train.epochs=1")
    ap.add_argument("--views", type=int, default=4,
                    help="augmented views per sample in the teacher cache (default 4; the recipe's 5 epochs then "
                         "replay 4 different views, see docs/cache.md)")
    ap.add_argument("--live", action="store_true", help="distil with the live teacher instead of a teacher cache")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from .data import DatasetNotFoundError, find_fashion_mnist
    from .engine.report import compare_runs

    try:
        root = find_fashion_mnist(args.data)
    except DatasetNotFoundError as e:
        print(f"kdforge demo: {e}", file=sys.stderr)
        return 2
    if not CONFIGS.is_dir():
        print(f"kdforge demo: the recipe configs are not at {CONFIGS}; run the demo from a kdforge checkout",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    extra = [f"data.root={root}", *args.set]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.views < 1:
        print(f"kdforge demo: --views must be >= 1, got {args.views}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    teacher = _run("teacher.yaml", out / "teacher", 0, extra, args.quiet)
    weights = Path(teacher["run_dir"]) / "best.pt"
    kd_extra = [*extra, f"teachers.teacher.weights={weights}"]
    build_s = None
    if not args.live:  # run the teacher once over K views; every KD run below replays them
        from .cache import build_cache

        cache = out / "teacher_cache"
        print(f"\n=== kdforge cache build kd.yaml --views {args.views} → {cache}", flush=True)
        t0 = time.perf_counter()
        build_cache(CONFIGS / "kd.yaml", args.views, cache, overrides=kd_extra, verbose=not args.quiet)
        build_s = time.perf_counter() - t0
        kd_extra.append(f"teacher_cache={cache}")
    results: list[tuple[int, float, float]] = []
    for seed in seeds:
        base = _run("baseline.yaml", out / f"seed{seed}" / "baseline", seed, extra, args.quiet)
        kd = _run("kd.yaml", out / f"seed{seed}" / "kd", seed, kd_extra, args.quiet)
        results.append((seed, _final(base), _final(kd)))
        plot = out / f"seed{seed}" / "accuracy.png"
        table, note = compare_runs([teacher["run_dir"], base["run_dir"], kd["run_dir"]], baseline=base["run_dir"],
                                   plot=plot)
        print(f"\nFashion-MNIST test set, seed {seed} (delta vs the baseline student):\n{table}")
        if note:
            print(note)
    if len(results) > 1:
        b = [r[1] for r in results]
        k = [r[2] for r in results]
        d = [r[2] - r[1] for r in results]
        print(f"\nfinal test top-1 over seeds {seeds}: baseline {statistics.mean(b):.2f} ± {statistics.stdev(b):.2f}, "
              f"KD {statistics.mean(k):.2f} ± {statistics.stdev(k):.2f}, delta {statistics.mean(d):+.2f} ± "
              f"{statistics.stdev(d):.2f} (teacher {_final(teacher):.2f})")
    wall = time.perf_counter() - t_start
    if build_s is not None:
        print(f"\nteacher cache: built once in {build_s:.0f} s ({args.views} views per sample); the KD runs read it "
              f"instead of running the teacher")
    print(f"demo wall time {wall:.0f} s")
    (out / "demo_results.json").write_text(json.dumps(
        {"teacher": _final(teacher), "runs": [{"seed": s, "baseline": b, "kd": k} for s, b, k in results],
         "teacher_cache": None if args.live else {"views": args.views, "build_s": build_s},
         "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
