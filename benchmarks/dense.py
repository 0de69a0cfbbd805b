"""Teacher → baseline vs distilled student on the Fashion-MNIST scenes, for segmentation or detection.

    OMP_NUM_THREADS=1 python benchmarks/dense.py seg --seeds 0 1     # configs/seg/{teacher,baseline,kd}.yaml
    OMP_NUM_THREADS=1 python benchmarks/dense.py det --seeds 0 1     # configs/det/...

Runs the teacher once (seed 0, ``runs/<family>_teacher``; reused if its summary.json exists), then the
baseline and the distilled student for every seed (``runs/<family>_{baseline,kd}_s<seed>``), all
through the same trainer as ``kdforge train``; prints ``kdforge compare``'s table, a markdown table of
the per-seed values and their mean ± std, and the per-seed kd − baseline difference (what docs/dense.md
shows). ``--set key=value`` overrides go to every run, the teacher included (e.g. ``--set train.epochs=2``
for a smoke test). An existing run directory is reused as is, whatever its config: use a fresh ``--runs``
directory (or ``--force``) after changing a config.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from kdforge.engine import train
from kdforge.engine.report import compare_runs, human

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"seg": ("mIoU", "pixel_acc"), "det": ("mAP", "mAP50")}


def run(cfg: Path, out: Path, overrides: list[str], force: bool) -> dict:
    if (out / "summary.json").is_file() and not force:
        print(f"reusing {out}")
        return json.loads((out / "summary.json").read_text())
    print(f"training {cfg.name} → {out}", flush=True)
    return train(cfg, [*overrides, f"output_dir={out}"], overwrite=True, verbose=False)  # a rerun replaces it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=sorted(METRICS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--runs", default="runs", help="parent of the run directories")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="retrain runs that already have a summary.json")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfgs, runs = ROOT / "configs" / args.family, Path(args.runs)
    teacher_dir = runs / f"{args.family}_teacher"
    teacher = run(cfgs / "teacher.yaml", teacher_dir, args.set, args.force)
    tname = next(iter(__import__("yaml").safe_load((cfgs / "kd.yaml").read_text())["teachers"]))
    results: dict[str, list[dict]] = {"baseline": [], "kd": []}
    for seed in args.seeds:
        for kind in ("baseline", "kd"):
            extra = [f"seed={seed}"] + ([f"teachers.{tname}.weights={teacher_dir / 'best.pt'}"] if kind == "kd" else [])
            results[kind].append(run(cfgs / f"{kind}.yaml", runs / f"{args.family}_{kind}_s{seed}",
                                     [*args.set, *extra], args.force))
    dirs = [teacher_dir] + [runs / f"{args.family}_{k}_s{s}" for s in args.seeds for k in ("baseline", "kd")]
    table, _ = compare_runs(dirs, baseline=runs / f"{args.family}_baseline_s{args.seeds[0]}")
    print(table)

    main_m, second = METRICS[args.family]
    print(f"\n| run | model | params | MACs | best {main_m} (per seed) | best {main_m} mean ± std | final {second} (mean) "
          f"| train time (mean) |\n|---|---|---|---|---|---|---|---|")
    for kind, sums in (("teacher", [teacher]), *results.items()):
        best = [s["best"]["value"] for s in sums]
        sec = [s["final"][second] for s in sums]
        t = [s["train_time_s"] for s in sums]
        print(f"| {kind} | {sums[0]['model']} | {human(sums[0]['params'])} | {human(sums[0]['macs'])} | "
              f"{' / '.join(f'{b:.4f}' for b in best)} | {_mean_std(best)} | {statistics.mean(sec):.4f} | "
              f"{statistics.mean(t):.0f} s |")
    diff = [k["best"]["value"] - b["best"]["value"] for b, k in zip(results["baseline"], results["kd"])]
    print(f"\nkd − baseline, best {main_m} per seed (seeds {' '.join(map(str, args.seeds))}): "
          f"{' / '.join(f'{d:+.4f}' for d in diff)}; mean {_mean_std(diff, signed=True)}")


def _mean_std(xs: list[float], signed: bool = False) -> str:
    """``mean ± sample std`` (std omitted for a single value)."""
    m = f"{statistics.mean(xs):+.4f}" if signed else f"{statistics.mean(xs):.4f}"
    return m if len(xs) < 2 else f"{m} ± {statistics.stdev(xs):.4f}"

if __name__ == "__main__":
    main()
