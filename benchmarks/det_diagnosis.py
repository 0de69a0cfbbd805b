"""Why detection distillation does or does not help here: the measurements behind docs/dense.md's diagnosis.

    OMP_NUM_THREADS=1 python benchmarks/det_diagnosis.py --runs runs/det15 --seeds 0 1

Reads the runs that ``benchmarks/dense.py det --runs DIR`` wrote and prints:

1. **the scenes**: objects per scene, box sizes, and the share of stride-4 feature cells that
   ``fine_grained``'s imitation mask selects (what the student is asked to imitate);
2. **the teacher** (and the first baseline student): mAP on the training scenes (no augmentation) against
   the test scenes — a teacher that has memorised the training scenes hands the student little beyond the
   labels there — and its mean heatmap probability at object centres, on their shoulders and on the
   background (how far its soft targets are from the ground-truth heatmap);
3. **evaluation noise**: the std of the baseline's mAP over random 300-scene subsets of the 1000 test
   scenes and over bootstrap resamples of all 1000, against the seed-to-seed std of the baselines; with
   ``--paired RECIPE ...``, each distilled run's Δ mAP against its seed's baseline and the bootstrap std
   of that paired Δ (what the test scenes alone can produce);
4. **training dynamics** of every run found: final train task loss, weighted KD / task loss ratio at the
   first and last epoch, and whether the eval metric was still rising at the last epoch.
"""
from __future__ import annotations

import argparse
import csv
import random
import statistics
from pathlib import Path

import torch

from kdforge.build import build_model_from_spec
from kdforge.config.run import load_run_config
from kdforge.data.scenes import det_collate
from kdforge.engine import build_datasets
from kdforge.losses.detection import imitation_mask
from kdforge.models import load_weights
from kdforge.models.det import centernet_decode, centernet_targets
from kdforge.tasks.detection import COCOMeter


def _model(run_dir: Path, weights: str = "last.pt") -> torch.nn.Module:
    cfg = load_run_config(run_dir / "config.yaml")
    model = build_model_from_spec(cfg.model.model_copy(update={"weights": None}))
    load_weights(model, run_dir / weights)
    return model.eval()


@torch.no_grad()
def _predict(model: torch.nn.Module, ds, bs: int = 100) -> tuple[list[dict], list[dict], list[torch.Tensor]]:
    preds, targets, heat = [], [], []
    for i in range(0, len(ds), bs):
        x, t = det_collate([ds[j] for j in range(i, min(i + bs, len(ds)))])
        out = model(x)
        preds += centernet_decode(out, 0.01, 100)
        targets += t
        heat.append(torch.sigmoid(out["heatmap"]))
    return preds, targets, heat


def _map(preds: list[dict], targets: list[dict], idx: list[int]) -> float:
    m = COCOMeter(10)
    m.update([preds[i] for i in idx], [targets[i] for i in idx])
    return m.compute()["mAP"]


def scenes(train_ds) -> None:
    n_obj, sizes, cover = [], [], []
    for i in range(len(train_ds)):
        _, t = train_ds[i]
        b = t["boxes"].float()
        n_obj.append(len(b))
        sizes += ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sqrt().tolist()
        cover.append(imitation_mask([b], (16, 16), (64.0, 64.0), (16, 32, 64), (0.5, 1.0, 2.0), 0.5).mean().item())
    q = statistics.quantiles(sizes, n=4)
    print(f"scenes: {len(train_ds)} training scenes, {statistics.mean(n_obj):.2f} objects per scene "
          f"(min {min(n_obj)}, max {max(n_obj)}); box side √(wh) px: median {q[1]:.1f}, quartiles {q[0]:.1f}–{q[2]:.1f}; "
          f"fine_grained imitation mask covers {100 * statistics.mean(cover):.1f}% of the 16×16 stride-4 cells")


def fit(run_dir: Path, weights: str, label: str, train_ds, test_ds) -> None:
    """mAP on the training scenes (no augmentation) and on the test scenes, and the mean heatmap probability
    at object centres (GT = 1), on their Gaussian shoulders (0 < GT < 1) and on the background (GT = 0)."""
    model = _model(run_dir, weights)
    for name, ds in (("train (no augmentation)", train_ds), ("test", test_ds)):
        preds, targets, heat = _predict(model, ds)
        hm = torch.cat(heat)
        gt = centernet_targets(targets, hm.shape[1], tuple(hm.shape[2:]))["heatmap"]
        at = lambda m: hm[m].mean().item()  # noqa: E731
        print(f"{label} on {name}: mAP {_map(preds, targets, list(range(len(ds)))):.4f}; mean σ(heatmap) at centres "
              f"{at(gt == 1):.3f}, shoulders {at((gt > 0) & (gt < 1)):.3f}, background {at(gt == 0):.4f}")


def noise(baseline_dirs: list[Path], test_ds, reps: int = 100) -> None:
    finals = []
    for d in baseline_dirs:
        rows = list(csv.DictReader(open(d / "metrics.csv")))
        finals.append(float(rows[-1]["eval_mAP"]))
    preds, targets, _ = _predict(_model(baseline_dirs[0]), test_ds)
    rng = random.Random(0)
    n = len(test_ds)
    k = min(300, n)
    sub = [_map(preds, targets, rng.sample(range(n), k)) for _ in range(reps)]
    boot = [_map(preds, targets, [rng.randrange(n) for _ in range(n)]) for _ in range(reps)]
    print(f"eval noise (baseline {baseline_dirs[0].name}): std of mAP over {reps} random {k}-scene subsets "
          f"{statistics.stdev(sub):.4f}; over {reps} bootstrap resamples of all {n} scenes {statistics.stdev(boot):.4f}")
    if len(finals) > 1:
        print(f"seed-to-seed std of the baselines' final mAP ({len(finals)} seeds): {statistics.stdev(finals):.4f} "
              f"(values {' / '.join(f'{v:.4f}' for v in finals)})")


def paired(base_dir: Path, kd_dir: Path, test_ds, reps: int) -> None:
    """Δ mAP of a distilled run against the baseline of its seed on the same test scenes, and the std of that
    Δ over bootstrap resamples of the scenes: how much of a difference the test set alone can produce."""
    rng = random.Random(1)
    (pb, tb, _), (pk, _, _) = _predict(_model(base_dir), test_ds), _predict(_model(kd_dir), test_ds)
    n = len(test_ds)
    full = _map(pk, tb, list(range(n))) - _map(pb, tb, list(range(n)))
    deltas = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        deltas.append(_map(pk, tb, idx) - _map(pb, tb, idx))
    print(f"paired Δ mAP {kd_dir.name} − {base_dir.name}: {full:+.4f}; bootstrap std of Δ over the {n} test scenes "
          f"{statistics.stdev(deltas):.4f} ({reps} resamples)")


def dynamics(run_dirs: list[Path]) -> None:
    print("\n| run | final mAP | final mAP50 | Δ mAP over the last 2 epochs | final task loss | KD/task loss, epoch 1 → last |")
    print("|---|---|---|---|---|---|")
    for d in run_dirs:
        rows = list(csv.DictReader(open(d / "metrics.csv")))
        r0, r1 = rows[0], rows[-1]
        ratio = lambda r: (float(r["train_loss"]) - float(r["task_loss"])) / float(r["task_loss"])  # noqa: E731
        rise = float(r1["eval_mAP"]) - float(rows[-3]["eval_mAP"]) if len(rows) > 2 else float("nan")
        print(f"| {d.name} | {float(r1['eval_mAP']):.4f} | {float(r1['eval_mAP50']):.4f} | {rise:+.4f} | "
              f"{float(r1['task_loss']):.3f} | {ratio(r0):.2f} → {ratio(r1):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/det15"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--paired", nargs="*", default=[], metavar="RECIPE",
                   help="paired bootstrap of these recipes against the baseline on each of --seeds")
    a = p.parse_args()
    torch.set_num_threads(1)
    tdir = a.runs / "det_teacher"
    cfg = load_run_config(tdir / "config.yaml", ["data.augment=false"])
    train_ds, test_ds, _ = build_datasets(cfg.data, 0)
    scenes(train_ds)
    fit(tdir, "best.pt", "teacher", train_ds, test_ds)
    if (a.runs / f"det_baseline_s{a.seeds[0]}" / "last.pt").is_file():
        fit(a.runs / f"det_baseline_s{a.seeds[0]}", "last.pt", f"baseline s{a.seeds[0]}", train_ds, test_ds)
    bases = [a.runs / f"det_baseline_s{s}" for s in a.seeds if (a.runs / f"det_baseline_s{s}" / "summary.json").is_file()]
    noise(bases, test_ds, a.reps)
    for r in a.paired:
        for s in a.seeds:
            if (a.runs / f"det_{r}_s{s}" / "summary.json").is_file():
                paired(a.runs / f"det_baseline_s{s}", a.runs / f"det_{r}_s{s}", test_ds, a.reps)
    runs = sorted(d for d in a.runs.glob("det_*_s*") if (d / "summary.json").is_file())
    dynamics(runs)


if __name__ == "__main__":
    main()
