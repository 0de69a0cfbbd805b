"""The main job (``make demo``): teacher → baseline student → distilled student on Fashion-MNIST.

Trains the teacher once, then for each seed the student alone (baseline) and the same student with
KD from that teacher, all through the ordinary trainer and the configs in ``configs/fmnist/``; prints
the comparison table (params, MACs, test accuracy, train time, delta vs baseline), writes a PNG of
the accuracy curves and, for several seeds, the mean ± std of the final test accuracy.

    python -m kdforge.demo                      # one seed, ~10 min on 2 CPU cores
    python -m kdforge.demo --seeds 0,1,2        # the README's numbers
    python -m kdforge.demo --data DIR           # IDX files somewhere else
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
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
    teacher = _run("teacher.yaml", out / "teacher", 0, extra, args.quiet)
    weights = Path(teacher["run_dir"]) / "best.pt"
    results: list[tuple[int, float, float]] = []
    for seed in seeds:
        base = _run("baseline.yaml", out / f"seed{seed}" / "baseline", seed, extra, args.quiet)
        kd = _run("kd.yaml", out / f"seed{seed}" / "kd", seed, [*extra, f"teachers.teacher.weights={weights}"],
                  args.quiet)
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
    (out / "demo_results.json").write_text(json.dumps(
        {"teacher": _final(teacher), "runs": [{"seed": s, "baseline": b, "kd": k} for s, b, k in results]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
