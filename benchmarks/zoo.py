"""Per-method results table: every recipe in configs/fmnist/methods/ against the baseline, over seeds.

Protocol (issue 16): any choice is made on the *selection* seed (0) only; the table's mean ± std comes from
the *report* seeds (default 1,2,3), which were not used to choose. Each run is an ordinary
`kdforge train CONFIG --set seed=S ...` in its own run directory, so a killed sweep continues where it
stopped (a run counts as done when its summary.json exists). The teachers are trained once, on the
same training subset, with configs/fmnist/teacher.yaml (seed 0 → `teacher`, seed 1 → `teacher2`).

    python benchmarks/zoo.py --subset 5000 --epochs 3 --workers 2          # run what is missing, write the doc
    python benchmarks/zoo.py --report-only                                  # rewrite docs/benchmarks.md

Scale: the CPU budget here does not allow the full 60k-image, 5-epoch recipe for 27 methods × 4 seeds,
so the sweep trains on the first `--subset` training images (all runs, teachers included) and evaluates
on the full 10k test set; the top-1 reported is the *last* epoch's (never the best-on-test epoch).
Writes docs/benchmarks.md and docs/img/zoo_fmnist.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS_DIR = ROOT / "configs" / "fmnist" / "methods"
ORDER = ["baseline", "kd", "dkd", "dist", "logit_std", "fitnet", "at", "ft", "ab", "ofd", "vid", "nst", "mgd", "cwd",
         "rkd", "crd", "irg", "pkt", "sp", "cc", "byot", "multi_teacher_mean", "multi_teacher_confidence", "meal_v2",
         "kd_at", "kd_fitnet", "kd_crd"]


NOTES = [
    "## What this table is not",
    "",
    "- **One pair only.** The issue asks for a second, ResNet pair (resnet8 ← resnet20 on 1×28×28).",
    "  Measured cost here, one CPU thread, 10k images: resnet8 trains at 30 s/epoch, resnet20 at 81 s/epoch",
    "  (resnet8x4: 274 s/epoch) — 27 methods × 4 seeds of it did not fit this CPU budget, so it is not in",
    "  the table. The same recipes run on it by overriding the models (`--set student.name=resnet8 --set",
    "  student.kwargs=\"{num_classes: 10, in_channels: 1}\"` and the teacher likewise; tap names are the",
    "  zoo's `layer1..3`), and the CIFAR-100 recipes (`configs/cifar100/`, resnet32x4 → resnet8x4) are the",
    "  GPU route (`benchmarks/cifar100.sh`, docs/cifar100.md).",
    "- **Small scale, undertrained students.** 5000 training images and 3 student epochs: the baseline",
    "  reaches ~65 % against ~86 % for the demo's full recipe (60k images, 5 epochs), where the same KD",
    "  recipe gains +1.0 (README). At this scale seed-to-seed spread is several points and most official",
    "  weights hurt (PKT, SP and the KD combinations most); the ranking need not hold at 60k images or on",
    "  CIFAR, and the weak teachers (see above) limit what any method can transfer. A full-data table is",
    "  `python benchmarks/zoo.py --subset 60000 --epochs 5` (a few CPU hours, or one GPU run).",
    "- **Live teachers.** Every distilled run recomputes its teachers; the teacher cache (docs/cache.md)",
    "  would make the logit methods cost what the baseline costs, but the epoch-time column is meant to",
    "  show what each method costs when run plainly.",
    "- **CRD** samples its negatives from other classes (the official recipe, kdforge's default), with",
    "  K = 1024 negatives instead of 16384: K=16384 exceeds this 5000-image subset (officially K is a third",
    "  of CIFAR's 50000 images) and ran at ~10 s per step on one CPU thread (411 s per epoch, measured on",
    "  seed 0 before the change; that run was stopped and is not in the table).",
]


def _run(cmd: list[str], log: Path) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "w") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _done(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


def train_teachers(out: Path, subset: int, teacher_epochs: int, workers: int) -> dict[str, Path]:
    jobs = {"teacher": 0, "teacher2": 1}
    dirs = {name: out / f"teacher_seed{seed}" for name, seed in jobs.items()}

    def one(name: str) -> None:
        d = dirs[name]
        if _done(d):
            return
        cmd = [sys.executable, "-m", "kdforge", "train", "configs/fmnist/teacher.yaml", "--out", str(d), "--overwrite",
               "--quiet", "--set", f"seed={jobs[name]}", "--set", f"data.train_subset={subset}",
               "--set", f"train.epochs={teacher_epochs}"]
        d.parent.mkdir(parents=True, exist_ok=True)
        if _run(cmd, out / f"teacher_{name}.log") != 0:
            raise SystemExit(f"teacher {name} failed; see {out / f'teacher_{name}.log'}")

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, jobs))
    return dirs


def method_command(method: str, seed: int, run_dir: Path, subset: int, epochs: int,
                   teachers: dict[str, Path]) -> list[str]:
    import yaml

    from kdforge import load_config

    path = METHODS_DIR / f"{method}.yaml"
    cfg = load_config(str(path))
    cmd = [sys.executable, "-m", "kdforge", "train", str(path.relative_to(ROOT)), "--out", str(run_dir), "--quiet",
           "--set", f"seed={seed}", "--set", f"data.train_subset={subset}", "--set", f"train.epochs={epochs}"]
    if (run_dir / "last.pt").exists():
        cmd.append("--resume")
    else:
        cmd.append("--overwrite")
    for name in cfg.teachers or {}:
        cmd += ["--set", f"teachers.{name}.weights={teachers[name] / 'best.pt'}"]
    raw = yaml.safe_load(path.read_text())
    for i, job in enumerate(raw.get("jobs") or []):
        loss = job.get("loss")
        if isinstance(loss, dict) and loss.get("type") == "crd":
            # the memory bank indexes the subset; the official K=16384 is a third of CIFAR's 50000 samples
            # and costs ~10 s per step on one CPU thread: keep K at a third of the subset, at most 1024
            cmd += ["--set", f"jobs.{i}.loss.n_data={subset}", "--set", f"jobs.{i}.loss.nce_k={min(1024, subset // 3)}"]
    return cmd


def sweep(out: Path, methods: list[str], seeds: list[int], subset: int, epochs: int, workers: int,
          teachers: dict[str, Path]) -> None:
    # seed-major order: the selection seed of every method first, then each report seed
    tasks = [(m, s) for s in seeds for m in methods]
    todo = [(m, s) for m, s in tasks if not _done(out / m / f"seed{s}")]
    print(f"zoo: {len(tasks) - len(todo)} of {len(tasks)} runs done; {len(todo)} to run", flush=True)

    def one(task: tuple[str, int]) -> None:
        m, s = task
        d = out / m / f"seed{s}"
        d.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        rc = _run(method_command(m, s, d, subset, epochs, teachers), out / m / f"seed{s}.log")
        print(f"zoo: {m:26s} seed {s}: {'ok' if rc == 0 else f'FAILED rc={rc}'} ({time.time() - t0:.0f} s)", flush=True)

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, todo))


def _result(run_dir: Path) -> tuple[float, float] | None:
    """(last-epoch top-1, median epoch time) of a finished run."""
    if not _done(run_dir):
        return None
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    summary = json.loads((run_dir / "summary.json").read_text())
    return float(summary["final"]["top1"]), statistics.median(float(r["epoch_time"]) for r in rows)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def report(out: Path, methods: list[str], select: list[int], seeds: list[int], subset: int, epochs: int,
           teachers: dict[str, Path], doc: Path, plot: Path) -> None:
    res = {m: {s: _result(out / m / f"seed{s}") for s in select + seeds} for m in methods}
    base = res.get("baseline", {})
    teacher_acc = {n: _result(d) for n, d in teachers.items()}
    lines = [
        "# Per-method results (Fashion-MNIST)",
        "",
        "Written by `python benchmarks/zoo.py` from the runs in its output directory; every number below is a",
        "measured run of the shipped recipe in `configs/fmnist/methods/<method>.yaml` through `kdforge train`.",
        "",
        f"**Setting.** Student: the demo CNN (8-16-32, 6.3K params); teachers: the demo teacher CNN (32-64-128,",
        f"94K params) trained with `configs/fmnist/teacher.yaml` on seed 0 (`teacher`) and seed 1 (`teacher2`,",
        "used by the multi-teacher rows and MEAL-V2). Every run, teachers included, trains on the first",
        f"{subset} Fashion-MNIST training images (a CPU budget: 27 methods × 4 seeds had to fit in well under an",
        f"hour on 2 cores) and is evaluated on the full 10k test set; students train {epochs} epochs with the",
        "demo's recipe otherwise (SGD + Nesterov, one-cycle lr 0.05, batch 128, crop + flip). Top-1 is the",
        "last epoch's, never the best-on-test epoch. Teachers: " + ", ".join(
            f"`{n}` {r[0]:.2f}%" for n, r in teacher_acc.items() if r) + ".",
        "",
        f"**Protocol.** Seed {', '.join(map(str, select))} is the selection seed (shown separately); the mean ± std",
        f"(sample std) and Δ come from report seeds {', '.join(map(str, seeds))} only. No weight, temperature",
        "or layer was tuned for this table: every recipe uses the official code's defaults and weights (the",
        "reason for any adaptation is written in its config). Δ is the mean over report seeds of (method −",
        "baseline) on the same seed, ± the std of those paired differences. Epoch time is the median epoch",
        "(teacher forwards included: live teachers, no cache) relative to the baseline's, over all its seeds;",
        "runs went two at a time on a 2-core machine that other work shared, so the ratios are indicative.",
        "",
        "| method | top-1 % (seeds " + ",".join(map(str, seeds)) + ") | per seed | Δ vs baseline | seed " +
        ",".join(map(str, select)) + " | epoch time × |",
        "|---|---|---|---|---|---|",
    ]
    base_t = statistics.median([base[s][1] for s in select + seeds if base.get(s)] or [float("nan")])
    rows = []
    for m in methods:
        r = res[m]
        acc = [r[s][0] for s in seeds if r[s]]
        deltas = [r[s][0] - base[s][0] for s in seeds if r[s] and base.get(s)]
        sel = [r[s][0] for s in select if r[s]]
        t = statistics.median([r[s][1] for s in select + seeds if r[s]] or [float("nan")])
        per = " / ".join(f"{r[s][0]:.2f}" if r[s] else "—" for s in seeds)
        d = "—" if m == "baseline" or not deltas else (
            f"{statistics.mean(deltas):+.2f}" + (f" ± {statistics.stdev(deltas):.2f}" if len(deltas) > 1 else ""))
        rows.append((m, acc, deltas))
        lines.append(f"| {m} | {_ms(acc)} | {per} | {d} | {_ms(sel)} | {t / base_t:.2f} |")
    scored = [(m, statistics.mean(ds), statistics.stdev(ds) if len(ds) > 1 else float("nan"), len(ds))
              for m, _, ds in rows if m != "baseline" and ds]
    win = [f"{m} ({d:+.2f})" for m, d, sd, n in scored if d > 0 and n > 1 and d > sd]
    weak = [f"{m} ({d:+.2f} ± {sd:.2f})" for m, d, sd, n in scored if d > 0 and not (n > 1 and d > sd)]
    lose = [f"{m} ({d:+.2f})" for m, d, sd, n in scored if d <= 0]
    lines += ["", f"**Beat the baseline by more than the spread of the paired differences:** {', '.join(win) or 'none'}.",
              f"**Ahead on average but within the spread:** {', '.join(weak) or 'none'}.",
              f"**Did not beat the baseline** (mean Δ ≤ 0; each ran its official recipe unchanged — no weight, "
              f"temperature or layer search was tried): {', '.join(lose) or 'none'}."]
    missing = [f"{m} seed {s}" for m in methods for s in select + seeds if not res[m][s]]
    lines += ["", "Runs not (yet) measured: " + (", ".join(missing) if missing else "none") + ".",
              "", "![per-method Δ top-1](img/zoo_fmnist.png)", "", *NOTES]
    doc.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("zoo: matplotlib missing, no plot")
        return
    have = [(m, ds) for m, _, ds in rows if m != "baseline" and ds]
    fig, ax = plt.subplots(figsize=(10, 4))
    xs = range(len(have))
    means = [statistics.mean(ds) for _, ds in have]
    errs = [statistics.stdev(ds) if len(ds) > 1 else 0.0 for _, ds in have]
    ax.bar(xs, means, yerr=errs, capsize=3, color=["tab:green" if v > 0 else "tab:red" for v in means])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(xs), [m for m, _ in have], rotation=60, ha="right")
    ax.set_ylabel("Δ top-1 vs baseline (points)")
    ax.set_title(f"Fashion-MNIST, CNN 8-16-32 ← CNN 32-64-128, seeds {','.join(map(str, seeds))} (mean ± std)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/zoo", help="sweep directory (resumable)")
    p.add_argument("--methods", default=",".join(ORDER))
    p.add_argument("--select-seeds", default="0")
    p.add_argument("--seeds", default="1,2,3", help="report seeds")
    p.add_argument("--subset", type=int, default=5000, help="training images (first N) for every run")
    p.add_argument("--epochs", type=int, default=3, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--doc", default="docs/benchmarks.md")
    p.add_argument("--plot", default="docs/img/zoo_fmnist.png")
    a = p.parse_args()
    out = (ROOT / a.out).resolve()
    methods = [m for m in a.methods.split(",") if m]
    unknown = sorted(set(methods) - {f.stem for f in METHODS_DIR.glob("*.yaml")})
    if unknown:
        raise SystemExit(f"zoo: no recipe for {unknown} in {METHODS_DIR}")
    select = [int(s) for s in a.select_seeds.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    teachers = {"teacher": out / "teacher_seed0", "teacher2": out / "teacher_seed1"}
    if not a.report_only:
        teachers = train_teachers(out, a.subset, a.teacher_epochs, a.workers)
        sweep(out, methods, select + seeds, a.subset, a.epochs, a.workers, teachers)
    report(out, methods, select, seeds, a.subset, a.epochs, teachers, ROOT / a.doc, ROOT / a.plot)
    print(f"zoo: wrote {a.doc} and {a.plot}")


if __name__ == "__main__":
    main()
