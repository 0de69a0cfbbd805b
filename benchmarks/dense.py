"""Teacher → baseline vs distilled students on the Fashion-MNIST scenes (segmentation or detection), with a
selection / confirmation split that cannot fool itself.

    OMP_NUM_THREADS=1 python benchmarks/dense.py det --runs runs/det15 \
        --candidates kd_fine_grained kd_pkd kd_heatmap --select-seeds 0 1 --confirm-seeds 3 4 5
    OMP_NUM_THREADS=1 python benchmarks/dense.py seg --select-seeds 0 1 2       # configs/seg/{baseline,kd}.yaml

Protocol (issue 15):

1. the teacher (``configs/<family>/teacher.yaml``, seed 0) is trained once, ``<runs>/<family>_teacher``;
2. **selection**: the baseline and every candidate recipe (``configs/<family>/<candidate>.yaml``) on the
   selection seeds; the chosen recipe is the one with the largest mean paired gain in the main metric
   (mAP / mIoU) among those whose second metric (mAP50 / pixel accuracy) does not drop on average
   (``--chosen NAME`` overrides the choice; it is then printed as such);
3. **confirmation**: the baseline and the chosen recipe on fresh seeds that played no part in the choice.
   The recipe counts as working when its mean paired gain over the confirmation seeds is positive and its
   second metric does not drop on average; the table shows every seed.

Every number is the **last epoch's** eval value: picking the best epoch on the test scenes is itself a
selection on the test set. A run directory with a ``summary.json`` is reused as is, whatever its config:
use a fresh ``--runs`` directory (or ``--force``) after changing a config. ``--set key=value`` overrides go
to every run, the teacher included (``--set train.epochs=1`` for a smoke test). Markdown tables are
printed and written to ``<runs>/report.md``; ``--curves PNG`` also draws the per-epoch eval curves and
the distillation / task loss ratio of every run.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import torch

from kdforge.engine import train
from kdforge.engine.report import human

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"seg": ("mIoU", "pixel_acc"), "det": ("mAP", "mAP50")}


def run(cfg: Path, out: Path, overrides: list[str], force: bool) -> dict:
    if (out / "summary.json").is_file() and not force:
        print(f"reusing {out}", flush=True)
        return json.loads((out / "summary.json").read_text())
    print(f"training {cfg.name} → {out} ({' '.join(overrides)})", flush=True)
    return train(cfg, [*overrides, f"output_dir={out}"], overwrite=True, verbose=False)  # a rerun replaces it


def _mean_std(xs: list[float], signed: bool = False) -> str:
    """``mean ± sample std`` (std omitted for a single value)."""
    m = f"{statistics.mean(xs):+.4f}" if signed else f"{statistics.mean(xs):.4f}"
    return m if len(xs) < 2 else f"{m} ± {statistics.stdev(xs):.4f}"


class Bench:
    """Runs and tabulates one family (seg/det) in one ``--runs`` directory."""

    def __init__(self, family: str, runs: Path, overrides: list[str], force: bool) -> None:
        self.family, self.runs, self.overrides, self.force = family, runs, overrides, force
        self.cfgs = ROOT / "configs" / family
        self.main, self.second = METRICS[family]
        self.teacher_dir = runs / f"{family}_teacher"
        self.summaries: dict[tuple[str, int], dict] = {}

    def teacher(self) -> dict:
        return run(self.cfgs / "teacher.yaml", self.teacher_dir, self.overrides, self.force)

    def dir(self, recipe: str, seed: int) -> Path:
        return self.runs / f"{self.family}_{recipe}_s{seed}"

    def recipe(self, recipe: str, seed: int) -> dict:
        import yaml

        cfg = self.cfgs / f"{recipe}.yaml"
        if not cfg.is_file():
            raise SystemExit(f"dense: no recipe {cfg}; candidates are configs/{self.family}/*.yaml names")
        extra = [f"seed={seed}"]
        teachers = yaml.safe_load(cfg.read_text()).get("teachers") or {}
        extra += [f"teachers.{t}.weights={self.teacher_dir / 'best.pt'}" for t in teachers]
        s = run(cfg, self.dir(recipe, seed), [*self.overrides, *extra], self.force)
        self.summaries[recipe, seed] = s
        return s

    def final(self, recipe: str, seed: int) -> tuple[float, float]:
        f = self.summaries[recipe, seed]["final"]
        return float(f[self.main]), float(f[self.second])

    def table(self, title: str, recipes: list[str], seeds: list[int]) -> tuple[str, dict[str, tuple[float, float]]]:
        """Per-seed final metrics, mean ± std, paired Δ vs the baseline; returns (markdown, {recipe: (Δmain, Δsecond)})."""
        m, s2 = self.main, self.second
        lines = [f"**{title}** (seeds {', '.join(map(str, seeds))}; last-epoch values)", "",
                 f"| recipe | params | {m} per seed | {m} mean ± std | Δ{m} vs baseline | {s2} per seed | "
                 f"{s2} mean | Δ{s2} | train time (mean) |", "|---|---|---|---|---|---|---|---|---|"]
        deltas: dict[str, tuple[float, float]] = {}
        for r in ["baseline", *recipes]:
            v = [self.final(r, s) for s in seeds]
            sums = [self.summaries[r, s] for s in seeds]
            d1 = [a[0] - self.final("baseline", s)[0] for a, s in zip(v, seeds)]
            d2 = [a[1] - self.final("baseline", s)[1] for a, s in zip(v, seeds)]
            if r != "baseline":
                deltas[r] = (statistics.mean(d1), statistics.mean(d2))
            lines.append(
                f"| {r} | {human(sums[0]['params'])} | {' / '.join(f'{a[0]:.4f}' for a in v)} | "
                f"{_mean_std([a[0] for a in v])} | {'—' if r == 'baseline' else _mean_std(d1, True)} | "
                f"{' / '.join(f'{a[1]:.4f}' for a in v)} | {statistics.mean(a[1] for a in v):.4f} | "
                f"{'—' if r == 'baseline' else _mean_std(d2, True)} | "
                f"{statistics.mean(x['train_time_s'] for x in sums):.0f} s |")
        return "\n".join(lines), deltas


def choose(deltas: dict[str, tuple[float, float]]) -> str | None:
    """The candidate with the largest mean gain in the main metric among those whose second metric does not drop."""
    ok = {r: d for r, d in deltas.items() if d[1] >= 0}
    return max(ok, key=lambda r: ok[r][0]) if ok else None


def curves(bench: Bench, recipes: list[str], seeds: list[int], png: Path) -> None:
    """Per-epoch eval main metric (one line per run) and distillation / task loss ratio of the distilled runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(["baseline", *recipes], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for r in ["baseline", *recipes]:
        for i, s in enumerate(seeds):
            path = bench.dir(r, s) / "metrics.csv"
            if not path.is_file():
                continue
            rows = list(csv.DictReader(open(path)))
            ep = [int(x["epoch"]) for x in rows]
            ax1.plot(ep, [float(x[f"eval_{bench.main}"]) for x in rows], color=colors[r], lw=1,
                     label=r if i == 0 else None)
            kd = [float(x["train_loss"]) - float(x["task_loss"]) for x in rows]
            if r != "baseline":
                ax2.plot(ep, [k / float(x["task_loss"]) for k, x in zip(kd, rows)], color=colors[r], lw=1,
                         label=r if i == 0 else None)
    ax1.set(xlabel="epoch", ylabel=f"eval {bench.main}", title=f"{bench.family}: eval {bench.main} per epoch")
    ax2.set(xlabel="epoch", ylabel="weighted KD loss / task loss", title="distillation term against the task loss")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=sorted(METRICS))
    p.add_argument("--candidates", nargs="+", default=["kd"], help="recipe names in configs/<family>/")
    p.add_argument("--select-seeds", "--seeds", type=int, nargs="+", default=[0, 1], dest="select_seeds")
    p.add_argument("--confirm-seeds", type=int, nargs="*", default=[], help="fresh seeds for the chosen recipe")
    p.add_argument("--chosen", help="skip the choice: confirm this candidate")
    p.add_argument("--runs", default="runs", help="parent of the run directories")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="retrain runs that already have a summary.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--curves", type=Path, help="write the per-epoch curves of every run to this PNG")
    args = p.parse_args()
    overlap = set(args.select_seeds) & set(args.confirm_seeds)
    if overlap:
        raise SystemExit(f"dense: seeds {sorted(overlap)} are both selection and confirmation seeds; "
                         f"confirmation seeds must be fresh")
    if args.chosen and args.chosen not in args.candidates:
        raise SystemExit(f"dense: --chosen {args.chosen} is not among --candidates {args.candidates}")
    torch.set_num_threads(args.threads)
    bench = Bench(args.family, Path(args.runs), args.set, args.force)
    teacher = bench.teacher()
    for seed in args.select_seeds:
        for r in ["baseline", *args.candidates]:
            bench.recipe(r, seed)
    tf = teacher["final"]
    report = [f"Teacher ({teacher['model']}, {human(teacher['params'])} params, seed 0): final {bench.main} "
              f"{tf[bench.main]:.4f}, {bench.second} {tf[bench.second]:.4f}.", ""]
    sel_md, deltas = bench.table("Selection", args.candidates, args.select_seeds)
    chosen = args.chosen or choose(deltas)
    how = "given with --chosen" if args.chosen else (
        f"largest mean Δ{bench.main} with Δ{bench.second} ≥ 0 on the selection seeds")
    report += [sel_md, "", f"Chosen: **{chosen}** ({how})." if chosen else
               f"Chosen: none — every candidate lowers {bench.second} on the selection seeds.", ""]
    seeds_all = list(args.select_seeds)
    if chosen and args.confirm_seeds:
        for seed in args.confirm_seeds:
            for r in ("baseline", chosen):
                bench.recipe(r, seed)
        conf_md, cd = bench.table("Confirmation", [chosen], args.confirm_seeds)
        d1, d2 = cd[chosen]
        verdict = "holds" if d1 > 0 and d2 >= 0 else "does not hold"
        report += [conf_md, "", f"Verdict: the gain **{verdict}** on the confirmation seeds "
                   f"(mean Δ{bench.main} {d1:+.4f}, mean Δ{bench.second} {d2:+.4f}).", ""]
        seeds_all += args.confirm_seeds
    text = "\n".join(report)
    print("\n" + text)
    (bench.runs / "report.md").write_text(text + "\n")
    if args.curves:
        curves(bench, [r for r in args.candidates if all((r, s) in bench.summaries for s in args.select_seeds)],
               args.select_seeds, args.curves)


if __name__ == "__main__":
    main()
