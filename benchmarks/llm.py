"""Byte-level LM distillation on the Python standard library: teacher, baseline and KD students.

Trains ``configs/lm/teacher.yaml`` once (seed 0), then every student config for each seed, through the
ordinary trainer (``kdforge train`` does the same), one CPU thread. Prints a markdown table of the
final validation bits per byte (mean ± std over seeds, and each seed's value), the difference to the
baseline per seed, and train time; writes ``results.json`` and ``bpb.png`` under ``--out``. Runs whose
``summary.json`` exists are reused, so an interrupted benchmark continues where it stopped.

    python benchmarks/llm.py --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

VARIANTS = {  # name → config
    "baseline": "configs/lm/baseline.yaml",
    "forward KL": "configs/lm/kd_fkl.yaml",
    "reverse KL": "configs/lm/kd_rkl.yaml",
    "JSD (β=0.5)": "configs/lm/kd_jsd.yaml",
    "forward KL + hidden MSE": "configs/lm/kd_fkl_hidden.yaml",
}


def run(cfg: str, out: Path, overrides: list[str]) -> dict:
    from kdforge.engine.trainer import train

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    t0 = time.time()
    summary = train(cfg, overrides + [f"output_dir={out}"], verbose=False)
    print(f"  {out.name}: bpb {summary['final']['bpb']:.4f}, train {summary['train_time_s']:.0f}s "
          f"(wall {time.time() - t0:.0f}s)", flush=True)
    return summary


def mean_std(v: list[float]) -> str:
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/llm_bench")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from: " + ", ".join(VARIANTS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    seeds = [int(s) for s in a.seeds.split(",")]
    names = [n.strip() for n in a.variants.split(",")]
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, 1 thread", flush=True)
    teacher = run("configs/lm/teacher.yaml", out / "teacher", [])
    weights = str(out / "teacher" / "best.pt")
    results: dict[str, dict[int, dict]] = {n: {} for n in names}
    for seed in seeds:  # all variants of a seed before the next seed: partial results cover every variant
        for n in names:
            over = [f"seed={seed}"] + ([f"teachers.teacher.weights={weights}"] if n != "baseline" else [])
            s = run(VARIANTS[n], out / f"{n.split(' (')[0].replace(' ', '_').replace('+', 'plus')}_s{seed}", over)
            results[n][seed] = {"bpb": s["final"]["bpb"], "ppl": s["final"]["ppl"], "train_time_s": s["train_time_s"],
                                "params": s["params"]}
            (out / "results.json").write_text(json.dumps({"teacher": teacher["final"] | {
                "train_time_s": teacher["train_time_s"], "params": teacher["params"]}, "students": results}, indent=2))
    base = results.get("baseline", {})
    print(f"\nteacher: {teacher['params'] / 1e3:.0f}K params, bpb {teacher['final']['bpb']:.4f}, "
          f"train {teacher['train_time_s']:.0f}s")
    print("| student | params | val bits/byte (mean ± std) | per seed | Δ vs baseline per seed | train time (mean) |")
    print("|---|---|---|---|---|---|")
    for n in names:
        r = results[n]
        bpb = [r[s]["bpb"] for s in seeds if s in r]
        delta = [r[s]["bpb"] - base[s]["bpb"] for s in seeds if s in r and s in base] if n != "baseline" else []
        print(f"| {n} | {r[seeds[0]]['params'] / 1e3:.1f}K | {mean_std(bpb)} | {', '.join(f'{v:.4f}' for v in bpb)} | "
              f"{', '.join(f'{v:+.4f}' for v in delta) or '—'} | "
              f"{statistics.mean(r[s]['train_time_s'] for s in seeds if s in r):.0f}s |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        for i, n in enumerate(names):
            v = [results[n][s]["bpb"] for s in seeds if s in results[n]]
            ax.scatter([i] * len(v), v, alpha=0.6)
            ax.errorbar([i], [statistics.mean(v)], yerr=[statistics.stdev(v) if len(v) > 1 else 0], fmt="k_", capsize=6)
        ax.axhline(teacher["final"]["bpb"], ls="--", c="gray", label="teacher")
        ax.set_xticks(range(len(names)), names, rotation=15)
        ax.set_ylabel("validation bits per byte (lower is better)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "bpb.png", dpi=100)
        print(f"\nplot: {out / 'bpb.png'}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
