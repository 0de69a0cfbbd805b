"""DDP: ``torchrun --nproc_per_node 2`` (gloo, CPU) matches one process with the same global batch.

The model has no BatchNorm: with plain BN each rank normalises with its own half-batch statistics,
so two processes would legitimately compute something different from one process on the full batch
(SyncBatchNorm would fix that). Data augmentation is off for the same reason: each rank draws its
noise from its own RNG stream. Everything else — data order (ShardSampler), DDP's gradient averaging,
the Distiller's step counter and warm-up, the lazy connector, loss and metric all-reduces — must
agree up to float rounding.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).parent
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import test_engine_support as s
from kdforge.engine import train
cfg = s.run_config(sys.argv[1], epochs=2, jobs=True, bn=False)
cfg["data"].update(augment=False, batch_size=32)
train(cfg, verbose=False)
"""


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    _run([sys.executable, str(script), str(tmp_path / "single")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          str(script), str(tmp_path / "ddp")], tmp_path)

    one = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert one["state"].keys() == two["state"].keys()
    assert int(two["state"]["step"]) == int(one["state"]["step"]) == 8  # 128 samples / 32 × 2 epochs
    for k, v in one["state"].items():
        torch.testing.assert_close(two["state"][k], v, atol=1e-5, rtol=1e-4, msg=k)

    s1 = json.loads((tmp_path / "single" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    assert s2["final"]["top1"] == s1["final"]["top1"]  # eval shards all-reduced over every test sample once
    assert s2["final"]["loss"] == pytest.approx(s1["final"]["loss"], rel=1e-5)
    # one metrics.csv (rank 0 only) with the all-reduced losses
    import csv
    with open(tmp_path / "ddp" / "metrics.csv") as f:
        r2 = list(csv.DictReader(f))
    with open(tmp_path / "single" / "metrics.csv") as f:
        r1 = list(csv.DictReader(f))
    assert len(r2) == 2
    for a, b in zip(r1, r2):
        assert float(b["train_loss"]) == pytest.approx(float(a["train_loss"]), rel=1e-4)
        assert float(b["loss_kd"]) == pytest.approx(float(a["loss_kd"]), rel=1e-4, abs=1e-7)
