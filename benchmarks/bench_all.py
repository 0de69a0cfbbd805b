"""All performance benchmarks in one run, with the summary table the README's Performance section shows.

    python benchmarks/bench_all.py               # ~15 min on one busy CPU thread
    python benchmarks/bench_all.py --quick       # fewer repeats (a smoke run)

Runs, in this order and each in this one process on one thread (imports in fresh subprocesses):
``teacher_path.py`` (KD step, default vs plain teacher path, both demo pairs), ``data_epoch.py``
(with_index vs plain data epoch), ``import_time.py`` (``import kdforge``, current vs previous
release), ``overhead.py`` (fixed per-step cost vs hand-written and vs the previous release). Every
comparison is interleaved within its benchmark, so load from other processes cancels in the ratios
(absolute times move with the machine's load; compare ratios).

A script here rather than a ``kdforge bench`` command: it compares against the previous release's
git tree and hand-written loops, which belong with the repository, not in the installed package.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import data_epoch
import import_time
import overhead
import teacher_path
from _bench import PREVIOUS_RELEASE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    q = a.quick
    t0 = time.perf_counter()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    cnn = teacher_path.run("cnn", 5 if q else 20, ablation=not q, bf16=False)
    res = teacher_path.run("resnet", 3 if q else 8, ablation=False, bf16=False)
    data = data_epoch.run(2 if q else 5, per_item=not q, limit=10_000 if q else None)
    imp = import_time.run(3 if q else 7)
    tiny = overhead.run("tiny", 100 if q else 400, old=True)
    prev = f"previous release ({PREVIOUS_RELEASE})"
    hand = tiny["hand-written"]
    rows = [
        ("KD step, demo cnn pair: plain → default teacher path", f"{cnn['plain_ms']:.1f} → {cnn['default_ms']:.1f} ms",
         f"{cnn['speedup']:.2f}× faster"),
        ("KD step, resnet32x4 → resnet8x4: plain → default", f"{res['plain_ms']:.0f} → {res['default_ms']:.0f} ms",
         f"{res['speedup']:.2f}× faster"),
        ("bf16 teacher: KD loss change (demo cnn / resnet)", f"{cnn['bf16_rel_diff']:.1e} / {res['bf16_rel_diff']:.1e}",
         "relative"),
        ("data epoch: with_index vs plain dataset", f"{data['with_index']:.2f} vs {data['plain']:.2f} s",
         f"{data['with_index'] / data['plain']:.2f}×"),
        ("`import kdforge` (after torch): previous → now", f"{imp[prev]:.2f} → {imp['kdforge']:.2f} s",
         f"{imp[prev] / imp['kdforge']:.2f}× faster"),
        ("fixed per-step cost over hand-written (tiny MLPs): previous → now",
         f"{tiny[prev] - hand:+.3f} → {tiny['kdforge'] - hand:+.3f} ms",
         f"step {tiny['kdforge'] / hand:.2f}× hand-written ({tiny[prev] / tiny['kdforge']:.2f}× faster than previous)"),
    ]
    if not q:
        for k, v in cnn["variants"].items():
            if k not in ("plain", "default"):
                rows.insert(1, (f"  ablation, demo cnn pair: {k}", "", f"{v:.2f}× faster than plain"))
        rows.insert(4 + len(cnn["variants"]) - 2, ("with_index, previous per-item wrapper vs plain",
                        f"{data['with_index, per-item (previous)']:.2f} vs {data['plain']:.2f} s",
                        f"{data['with_index, per-item (previous)'] / data['plain']:.2f}×"))
    print(f"\n## Summary ({(time.perf_counter() - t0) / 60:.1f} min)\n")
    print("| measurement | medians | ratio |\n|---|---|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")


if __name__ == "__main__":
    main()
