"""kill -9 loop: kill real ``kdforge train`` runs at random moments, resume them, compare bit for bit.

A reference distillation run (KD + FitNet through a lazy connector, augmented data, one-cycle lr,
a checkpoint every epoch) trains straight through. Then each trial starts the same run in its own
directory, sends ``SIGKILL`` at a random time — anywhere in start-up, training, evaluation or a
checkpoint write — and continues it with ``--resume`` (killing it again up to ``--kills`` times),
or with ``--overwrite`` when the kill came before the first checkpoint existed. When the run has
finished, every tensor of ``last.pt`` and ``best.pt`` (student, connectors, optimiser, scheduler,
RNG states) and every ``metrics.csv`` value except timings must equal the reference's exactly, and
no ``*.tmp`` file or lock may be left behind.

    python benchmarks/kill_resume.py --trials 5 --kills 3       # Fashion-MNIST subset, ~1 min a trial

Prints one line per trial (kill times, which phase the run was in, result) and exits 1 on any
difference.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time", "throughput"}


def config(data: str | None, teacher: Path | None, out: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "kill", "seed": 0, "output_dir": str(out), "device": "cpu",
        "model": {"name": "cnn", "kwargs": {"channels": [4, 8, 16], "num_classes": 10, "in_channels": 1}},
        "data": {"name": "fashion_mnist", "root": data, "batch_size": 64, "augment": True,
                 "train_subset": 1024, "test_subset": 256},
        "train": {"epochs": 4, "log_every": 4, "ce_weight": 0.5,
                  "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
                  "schedule": {"name": "onecycle", "pct_start": 0.2}},
        "checkpoint": {"every": 1},
    }
    if teacher is not None:
        cfg["teachers"] = {"t": {"name": "cnn", "kwargs": {"channels": [8, 16, 32], "num_classes": 10,
                                                             "in_channels": 1}, "weights": str(teacher)}}
        cfg["jobs"] = [{"name": "kd", "loss": {"type": "kd", "T": 2}, "student": "", "teacher": "", "weight": 0.5},
                       {"name": "fit", "loss": "fitnet", "student": "stages.1", "teacher": "stages.1",
                        "connector": "conv1x1", "weight": 0.1}]
    return cfg


def cli(cfg_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kdforge", "train", str(cfg_path), "--quiet", *extra]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return e


def run_to_end(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def tensors_equal(a: Any, b: Any, where: str, diffs: list[str]) -> None:
    if isinstance(a, torch.Tensor):
        if not (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)):
            diffs.append(where)
    elif isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            diffs.append(f"{where} (keys)")
            return
        for k in a:
            if k in ("train_time_s", "config"):
                continue
            tensors_equal(a[k], b[k], f"{where}.{k}", diffs)
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            diffs.append(f"{where} (length)")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]", diffs)
    elif a != b and not (a != a and b != b):  # NaN == NaN here
        diffs.append(where)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def compare(ref: Path, run: Path) -> list[str]:
    diffs: list[str] = []
    for name in ("last.pt", "best.pt", *(p.name for p in sorted(ref.glob("epoch_*.pt")))):
        if not (run / name).is_file():
            diffs.append(f"{name} missing")
            continue
        tensors_equal(torch.load(ref / name, weights_only=True), torch.load(run / name, weights_only=True), name, diffs)
    if rows(ref / "metrics.csv") != rows(run / "metrics.csv"):
        diffs.append("metrics.csv")
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == ".kdforge.lock"]
    if leftovers:
        diffs.append(f"left behind: {leftovers}")
    return diffs


def phase(run: Path) -> str:
    done = sorted(run.glob("epoch_*.pt")) if run.is_dir() else []
    tmp = [p.name for p in run.glob(".*.tmp")] if run.is_dir() else []
    return f"{len(done)} epoch ckpts" + (f", mid-write {tmp[0].split('.')[1]}" if tmp else "")


def trial(cfg_path: Path, run: Path, ref_time: float, kills: int, rng: random.Random,
          window: tuple[float, float] = (0.1, 0.9)) -> tuple[list[str], list[str]]:
    log = []
    first = True
    if run.exists():  # each trial starts from nothing
        shutil.rmtree(run)
    for _ in range(kills):
        if first or not (run / "last.pt").is_file():  # nothing to resume yet: start (again)
            cmd = cli(cfg_path, "--overwrite") if run.exists() else cli(cfg_path)
        else:
            cmd = cli(cfg_path, "--resume")
        first = False
        p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        delay = rng.uniform(*window) * ref_time  # a fraction of a full run, start-up included
        try:
            p.wait(timeout=delay)
            if p.returncode != 0:
                raise SystemExit(f"run failed: {' '.join(cmd)}\n{p.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            log.append(f"finished before kill at {delay:.1f}s")
            break
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            log.append(f"kill@{delay:.1f}s ({phase(run)})")
    else:
        cmd = cli(cfg_path, "--resume") if (run / "last.pt").is_file() else cli(cfg_path, "--overwrite")
        run_to_end(cmd)
    if not (run / "summary.json").is_file():  # killed after the last epoch but before the summary
        run_to_end(cli(cfg_path, "--resume"))
    return log, compare(cfg_path.parent / "ref", run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--kills", type=int, default=3, help="kills per trial before it may finish")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, nargs=2, default=(0.1, 0.9), metavar=("FROM", "TO"),
                    help="kill times are uniform in [FROM, TO] × the reference run's time (default 0.1 0.9)")
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory (default: the usual places)")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    work = Path(a.work or tempfile.mkdtemp(prefix="kdforge_kill_"))
    work.mkdir(parents=True, exist_ok=True)
    teacher_cfg = config(a.data, None, work / "teacher")
    teacher_cfg["model"]["kwargs"]["channels"] = [8, 16, 32]
    teacher_cfg["train"]["epochs"] = 1
    (work / "teacher.yaml").write_text(yaml.safe_dump(teacher_cfg))
    if not (work / "teacher" / "best.pt").is_file():
        run_to_end(cli(work / "teacher.yaml", "--overwrite"))
    failures = 0
    ref_cfg = config(a.data, work / "teacher" / "best.pt", work / "ref")
    (work / "ref.yaml").write_text(yaml.safe_dump(ref_cfg))
    ref_time = run_to_end(cli(work / "ref.yaml", "--overwrite"))
    print(f"reference run: {ref_time:.1f}s (incl. start-up) in {work / 'ref'}")
    for t in range(a.trials):
        run = work / f"trial{t}"
        cfg = config(a.data, work / "teacher" / "best.pt", run)
        cfg_path = work / f"trial{t}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        log, diffs = trial(cfg_path, run, ref_time, a.kills, rng, tuple(a.window))
        failures += bool(diffs)
        print(f"trial {t}: {'; '.join(log)} -> {'IDENTICAL' if not diffs else 'DIFFERENT: ' + ', '.join(diffs[:8])}",
              flush=True)
    print(f"{a.trials - failures}/{a.trials} trials bit-identical to the reference")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
