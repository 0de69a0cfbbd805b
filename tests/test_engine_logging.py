"""Engine pieces in isolation: progress output, CSV log on resume, atomic save, RNG round trip, samplers."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from kdforge.engine.checkpoint import atomic_save, preserved_rng, rng_state, set_rng_state
from kdforge.engine.data import ShardSampler
from kdforge.engine.logging import CSVLog, Progress, read_csv
from kdforge.tasks.classification import ClassificationMeter


def test_progress_plain_lines_when_not_a_tty():
    stream = io.StringIO()
    p = Progress(1, 3, total=10, log_every=4, stream=stream)
    for i in range(1, 11):
        p.update(i, i * 8, {"loss": 1.0 / i} if i % 4 == 0 or i == 10 else None)
    p.close()
    lines = stream.getvalue().splitlines()
    assert [ln.split(" loss=")[0] for ln in lines] == ["epoch 1/3 step 4/10", "epoch 1/3 step 8/10",
                                                       "epoch 1/3 step 10/10"]
    assert lines[0].split()[4] == "loss=0.25" and lines[0].endswith("samples/s")


def test_csv_log_resume_drops_later_epochs_and_widens(tmp_path):
    path = tmp_path / "m.csv"
    log = CSVLog(path)
    log.write({"epoch": 1, "train_loss": 0.5})
    log.write({"epoch": 2, "train_loss": 0.25, "eval_top1": 90.0})  # a column appearing later
    log.write({"epoch": 3, "train_loss": 0.125})
    assert [r["eval_top1"] for r in read_csv(path)] == ["", "90", ""]
    CSVLog(path, resume_epoch=2).write({"epoch": 3, "train_loss": 0.1, "eval_top1": 91.0})
    assert [(r["epoch"], r["train_loss"]) for r in read_csv(path)] == [("1", "0.5"), ("2", "0.25"), ("3", "0.1")]
    CSVLog(path)  # a fresh run starts a fresh log
    assert not path.exists()


def test_atomic_save_and_rng_round_trip_load_with_weights_only(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = rng_state()
    expect = (random.random(), float(np.random.rand()), float(torch.rand(())))
    path = atomic_save({"rng": state}, tmp_path / "sub" / "c.pt")
    loaded = torch.load(path, weights_only=True)["rng"]
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(loaded)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expect
    with preserved_rng():
        torch.rand(5), random.random(), np.random.rand()
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(loaded)
    random.random(), np.random.rand(), torch.rand(())
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(())))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.pt"]


def test_shard_sampler_seeded_and_partitioned():
    one = ShardSampler(10, seed=3)
    one.set_epoch(1)
    order = list(one)
    assert sorted(order) == list(range(10)) and order == list(one)
    one.set_epoch(2)
    assert list(one) != order
    shards = [ShardSampler(10, r, 2, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(1)
    assert list(shards[0]) == order[0::2] and list(shards[1]) == order[1::2]
    ev = [ShardSampler(7, r, 2, shuffle=False, pad=False) for r in range(2)]
    assert sorted(list(ev[0]) + list(ev[1])) == list(range(7)) and [len(e) for e in ev] == [4, 3]


def test_classification_meter_values_and_state():
    m = ClassificationMeter(topk=(1, 2))
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    m.update(logits, torch.tensor([0, 2, 1, 1]))  # top1 hits: 1; top2 hits: 3
    out = m.compute()
    assert out["top1"] == pytest.approx(25.0) and out["top2"] == pytest.approx(75.0)
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 1, 1]))
    assert out["loss"] == pytest.approx(float(ce), rel=1e-6)
    m2 = ClassificationMeter(topk=(1, 2))
    m2.load_state(m.state() * 2)  # the sum of two identical ranks
    assert m2.compute() == pytest.approx(out)
