"""Trainer: outputs on disk, AMP, grad clipping, LR schedules, exact resume, checkpoint/weights errors."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
from test_engine_support import TinyNet, run_config

from kdforge.config import ConfigError
from kdforge.engine import CheckpointError, LRFactor, Trainer, build_scheduler, train
from kdforge.engine import trainer as trainer_mod
from kdforge.models import WeightsError


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_distill_run_writes_csv_summary_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    res = train(run_config(str(out), epochs=2), verbose=False)
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("lr", "train_loss", "task_loss", "kd_loss", "loss_kd", "loss_fit", "eval_top1", "eval_top5",
                "eval_loss", "epoch_time", "throughput"):
        assert rows[-1][col] != "", col
    # lr of each epoch's last step: cosine over 16 steps after a 4-step (half-epoch) warm-up, base 0.1
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 12)), rel=1e-4)
    assert float(rows[1]["lr"]) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 11 / 12)), rel=1e-4)
    # train loss = 0.5 * task + kd (sum of the weighted jobs)
    r = rows[-1]
    assert float(r["train_loss"]) == pytest.approx(0.5 * float(r["task_loss"]) + float(r["kd_loss"]), rel=1e-4)
    assert float(r["kd_loss"]) == pytest.approx(float(r["loss_kd"]) + float(r["loss_fit"]), rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == res
    assert summary["params"] == sum(p.numel() for p in TinyNet().parameters())
    assert summary["macs"] == 4 * 9 * 64 + 16 * 4  # conv 3x3 (4 out, 8x8) + fc 16→4, one sample
    assert summary["jobs"] == ["kd", "fit"] and summary["best"]["metric"] == "top1"
    assert summary["best"]["value"] == max(float(r["eval_top1"]) for r in rows)
    assert summary["final"]["top1"] == pytest.approx(float(rows[-1]["eval_top1"]), abs=1e-3)
    for name in ("best.pt", "last.pt", "epoch_001.pt", "epoch_002.pt", "config.yaml"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 16  # 128 samples / 16 per batch × 2 epochs
    assert int(ckpt["state"]["step"]) == 16  # the Distiller's step counter
    assert any(k.startswith("jobs.1.connectors.0") for k in ckpt["state"])  # lazy connector materialised
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_plain_training_learns(tmp_path):
    res = train(run_config(str(tmp_path / "plain"), epochs=2, jobs=False), verbose=False)
    assert res["jobs"] == [] and res["teachers"] == {}
    assert res["final"]["top1"] > 50.0  # 4 noisy blobs; chance is 25 %
    assert "kd_loss" not in _rows(tmp_path / "plain" / "metrics.csv")[0]


def test_amp_bf16_on_cpu(tmp_path):
    model = TinyNet()
    dtypes = []
    model.conv1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
    cfg = run_config(str(tmp_path / "amp"), epochs=1, jobs=False, amp={"enabled": True, "dtype": "bf16"})
    res = train(cfg, model=model, verbose=False)
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert math.isfinite(res["final"]["loss"])


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    from kdforge.engine import AmpError
    with pytest.raises(AmpError, match="bf16"):
        train(run_config(str(tmp_path / "x"), epochs=1, jobs=False, amp="fp16"), verbose=False)


def test_grad_clip_bounds_each_update(tmp_path):
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    clip, lr = 1e-3, 1.0
    cfg = run_config(str(tmp_path / "clip"), epochs=1, jobs=False, grad_clip=clip,
                     optimizer={"name": "sgd", "lr": lr, "momentum": 0.0, "weight_decay": 0.0},
                     schedule="none")
    train(cfg, model=model, verbose=False)
    moved = torch.sqrt(sum(((model.state_dict()[k] - v) ** 2).sum() for k, v in before.items()))
    steps = 128 // 16
    assert 0 < float(moved) <= steps * lr * clip * (1 + 1e-4)


def test_lr_schedules_values():
    cos = LRFactor("cosine", total_steps=110, steps_per_epoch=10, warmup_steps=10)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.5) and cos(110) == pytest.approx(0.0)
    step = LRFactor("step", total_steps=100, steps_per_epoch=10, milestones=[3, 6], gamma=0.1)
    assert [step(s) for s in (0, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    one = LRFactor("onecycle", total_steps=100, steps_per_epoch=10, pct_start=0.3, div_factor=25)
    assert one(0) == pytest.approx(1 / 25) and one(30) == pytest.approx(1.0) and one(100) == pytest.approx(0.0)
    assert one(15) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert LRFactor("none", 10, 1, warmup_steps=4)(1) == pytest.approx(0.5)
    # through LambdaLR: lr after k optimiser steps, with min_lr
    from kdforge.config.run import ScheduleConfig
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sc = ScheduleConfig.model_validate({"name": "cosine", "min_lr": 0.02})
    sched = build_scheduler(opt, sc.name, sc.kwargs, epochs=2, steps_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[5] == pytest.approx(0.11)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)


class _Crash(Exception):
    pass


def test_resume_is_exact(tmp_path, monkeypatch):
    teacher = TinyNet(width=8, bn=True)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    tw = str(tmp_path / "teacher.pt")
    straight = Trainer(run_config(str(tmp_path / "a"), epochs=2, bn=True, teacher_weights=tw), verbose=False)
    res_a = straight.fit()

    real_barrier, calls = trainer_mod.barrier, []

    def crash_after_first_epoch(ctx):  # the end-of-epoch barrier comes after the checkpoint is written
        calls.append(1)
        raise _Crash("simulated crash")

    monkeypatch.setattr(trainer_mod, "barrier", crash_after_first_epoch)
    with pytest.raises(_Crash):
        Trainer(run_config(str(tmp_path / "b"), epochs=2, bn=True, teacher_weights=tw), verbose=False).fit()
    monkeypatch.setattr(trainer_mod, "barrier", real_barrier)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = Trainer(run_config(str(tmp_path / "b"), epochs=2, bn=True, teacher_weights=tw), verbose=False)
    res_b = resumed.fit(resume=True)

    sa, sb = straight.distiller.state_dict(), resumed.distiller.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert int(resumed.distiller.step) == 16 == int(straight.distiller.step)
    assert res_b["resumed_from"].endswith("last.pt") and res_b["final"] == res_a["final"]
    rows_a, rows_b = _rows(tmp_path / "a" / "metrics.csv"), _rows(tmp_path / "b" / "metrics.csv")
    drop = ("epoch_time", "throughput")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows_b]


def test_incompatible_or_missing_checkpoint(tmp_path):
    out = str(tmp_path / "r")
    train(run_config(out, epochs=1, jobs=False), verbose=False)
    other = run_config(out, epochs=2, jobs=False)
    other["model"]["name"] = "tiny_net_other"
    with pytest.raises(CheckpointError, match="student.name: 'tiny_net' → 'tiny_net_other'"):
        train(other, resume=True, verbose=False)
    wider = run_config(out, epochs=2, jobs=False)
    wider["model"]["kwargs"]["width"] = 6
    with pytest.raises(CheckpointError, match=r"student.kwargs.width: \(not set\) → 6"):
        train(wider, resume=True, verbose=False)
    with pytest.raises(CheckpointError, match="shape mismatch"):  # a model object the config does not describe
        train(run_config(out, epochs=2, jobs=False), resume=True, model=TinyNet(width=6), verbose=False)
    with pytest.raises(CheckpointError, match="jobs"):
        train(run_config(out, epochs=2), resume=True, verbose=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(run_config(out, epochs=2, jobs=False), resume=str(tmp_path / "nope.pt"), verbose=False)
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a kdforge training checkpoint"):
        train(run_config(out, epochs=2, jobs=False), resume=str(tmp_path / "plain.pt"), verbose=False)


def test_teacher_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        train(run_config(str(tmp_path / "x"), teacher_weights=str(tmp_path / "missing.pt")), verbose=False)
    torch.save(TinyNet(width=3).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="shape"):
        train(run_config(str(tmp_path / "x"), teacher_weights=str(tmp_path / "wrong.pt")), verbose=False)
    bad = run_config(str(tmp_path / "x"))
    bad["jobs"][0]["loss"] = {"type": "kd", "temperature": 4}
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.loss: loss kd has no argument 'temperature'; did you mean 'T'\?"):
        train(bad, verbose=False)
