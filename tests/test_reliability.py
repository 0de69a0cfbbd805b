"""Reliability (issue 13): one run per directory, resume rules, divergence guard, clear user errors.

Each test covers one case of a careless or hostile user and fails on the code before the fix.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import re
import subprocess
import sys
import time

import copy

import pytest
import torch
import yaml
from test_data import fake_dataset
from test_engine_support import TinyNet, run_config
from torch import nn

from kdforge import Distiller, DistillJob
from kdforge.cli import main
from kdforge.config import ConfigError
from kdforge.config.safe_yaml import load_yaml
from kdforge.distiller import DistillerError
from kdforge.engine import CheckpointError, TrainingError, train
from kdforge.engine import checkpoint as ckpt_mod
from kdforge.engine.guard import DivergenceGuard
from kdforge.engine.rundir import LOCK_NAME, RunDirError, claim_run_dir
from kdforge.job import JobError


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _yaml(tmp_path, cfg, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def _cli(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


# ------------------------------------------------------------------------------ one run per directory
def test_rerun_without_resume_is_refused_and_keeps_the_old_run(tmp_path):
    out = tmp_path / "r"
    train(run_config(str(out), epochs=1, jobs=False), verbose=False)
    best = (out / "best.pt").read_bytes()
    rows = _rows(out / "metrics.csv")
    with pytest.raises(RunDirError, match="--resume.*--overwrite"):
        train(run_config(str(out), epochs=1, jobs=False, optimizer={"name": "sgd", "lr": 0.5}), verbose=False)
    assert (out / "best.pt").read_bytes() == best and _rows(out / "metrics.csv") == rows
    assert not (out / LOCK_NAME).exists()


def test_overwrite_replaces_the_earlier_run(tmp_path):
    out = tmp_path / "r"
    train(run_config(str(out), epochs=2, jobs=False), verbose=False)
    (out / "notes.txt").write_text("mine")
    train(run_config(str(out), epochs=1, jobs=False), overwrite=True, verbose=False)
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1"]
    assert not (out / "epoch_002.pt").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_second_process_on_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "r"
    with claim_run_dir(out):  # this process holds the lock, as a running `kdforge train` would
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            train(run_config(str(out), epochs=1, jobs=False), verbose=False)
    train(run_config(str(out), epochs=1, jobs=False), verbose=False)  # released: free again


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "started": time.time()}))
    lock = claim_run_dir(out)
    assert any("stale lock" in n and dead.stdout.strip() in n for n in lock.notes)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert out.is_dir() and not (out / LOCK_NAME).exists()


def test_out_pointing_at_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    cfg = _yaml(tmp_path, run_config(str(tmp_path / "r"), epochs=1, jobs=False))
    rc, err = _cli(capsys, "train", str(cfg), "--quiet", "--out", str(f))
    assert rc == 2 and "is a file" in err and "Traceback" not in err


def test_orphan_tmp_files_are_removed_and_an_interrupted_epoch_checkpoint_rewritten(tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = ckpt_mod.atomic_save

    def killed_writing_epoch_2(obj, path):  # the process dies inside the write of epoch_002.pt
        if str(path).endswith("epoch_002.pt"):
            (out / ".epoch_002.pt.abc123.tmp").write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        return real(obj, path)

    from kdforge.engine import trainer as trainer_mod
    monkeypatch.setattr(trainer_mod, "atomic_save", killed_writing_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(run_config(str(out), epochs=3, jobs=False), verbose=False)
    monkeypatch.setattr(trainer_mod, "atomic_save", real)
    assert not (out / "epoch_002.pt").exists() and (out / ".epoch_002.pt.abc123.tmp").exists()
    train(run_config(str(out), epochs=3, jobs=False), resume=True, verbose=False)
    assert not list(out.glob(".*.tmp"))
    straight = tmp_path / "s"
    train(run_config(str(straight), epochs=3, jobs=False), verbose=False)
    a = torch.load(out / "epoch_002.pt", weights_only=True)["student"]
    b = torch.load(straight / "epoch_002.pt", weights_only=True)["student"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ resume
def test_resume_with_more_epochs_extends_the_schedule_and_keeps_config_history(tmp_path):
    out, straight = tmp_path / "r", tmp_path / "s"
    train(run_config(str(out), epochs=2, jobs=False), verbose=False)
    res = train(run_config(str(out), epochs=4, jobs=False), resume=True, verbose=False)
    train(run_config(str(straight), epochs=4, jobs=False), verbose=False)
    lrs = [float(r["lr"]) for r in _rows(out / "metrics.csv")]
    want = [float(r["lr"]) for r in _rows(straight / "metrics.csv")]
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["1", "2", "3", "4"]
    assert lrs[2] > 0.01 and lrs[2:] == pytest.approx(want[2:], rel=1e-5)  # the 4-epoch schedule, not lr 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2  # history, not rewritten
    again = (out / "config.resume-1.yaml").read_text()
    assert "# changed train.epochs: 2 → 4" in again and yaml.safe_load(again)["train"]["epochs"] == 4
    assert res["resume_changes"] == ["train.epochs: 2 → 4"]


def test_resume_with_a_new_lr_uses_it(tmp_path):
    out = tmp_path / "r"
    sched = {"name": "none"}
    train(run_config(str(out), epochs=1, jobs=False, schedule=sched), verbose=False)
    train(run_config(str(out), epochs=2, jobs=False, schedule=sched, optimizer={"name": "sgd", "lr": 0.02}),
          resume=True, verbose=False)
    assert [float(r["lr"]) for r in _rows(out / "metrics.csv")] == pytest.approx([0.1, 0.02])


@pytest.mark.parametrize("change,field", [
    (lambda c: c["jobs"][0].update(loss={"type": "kd", "T": 2}), "jobs.0.loss"),
    (lambda c: c["data"].update(batch_size=32), "data.batch_size: 16 → 32"),
    (lambda c: c.update(seed=1), "seed: 0 → 1"),
    (lambda c: c["train"].update(ce_weight=1.0), "train.ce_weight"),
])
def test_resume_refuses_changes_that_must_match(tmp_path, change, field):
    out = str(tmp_path / "r")
    train(run_config(out, epochs=1), verbose=False)
    cfg = run_config(out, epochs=2)
    change(cfg)
    with pytest.raises(CheckpointError, match=field.replace(".", r"\.")):
        train(cfg, resume=True, verbose=False)


def test_resume_error_never_suggests_weights_only_false(tmp_path):
    out = tmp_path / "r"
    train(run_config(str(out), epochs=1, jobs=False), verbose=False)
    torch.save({"format": "kdforge-checkpoint", "obj": TinyNet()}, out / "last.pt")  # a pickled module
    with pytest.raises(CheckpointError) as e:
        train(run_config(str(out), epochs=2, jobs=False), resume=True, verbose=False)
    assert "weights_only" not in str(e.value) and "never unpickles" in str(e.value)
    assert e.value.__cause__ is None


# ------------------------------------------------------------------------------ job semantics
def test_job_without_teachers_is_an_error_not_silent_self_distillation():
    with pytest.raises(DistillerError, match=r"has no teacher.*teachers: \['self'\]"):
        Distiller(TinyNet(), None, [DistillJob(loss="kd", student="", teacher="")])
    Distiller(TinyNet(), None, [DistillJob(loss="fitnet", student="conv1", teacher="conv1", teachers="self")])


def test_run_config_jobs_without_any_teacher_fail_before_data(tmp_path, capsys):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    del cfg["teachers"]
    rc, err = _cli(capsys, "train", str(_yaml(tmp_path, cfg)), "--quiet")
    assert rc == 2 and "['kd', 'fit'] have no teacher" in err and "teachers: [self]" in err
    assert not (tmp_path / "r").exists()


def test_teacher_weights_must_match_the_teachers():
    with pytest.raises(DistillerError, match="teacher_weights has 2 entries for the 1 teacher"):
        Distiller(TinyNet(), TinyNet(width=8), [DistillJob(loss="kd", student="", teacher="", teacher_weights=[1, 1])])


def test_negative_weight_needs_an_explicit_opt_in():
    with pytest.raises(ValueError, match="negative"):
        DistillJob(loss="kd", student="", teacher="", weight=-1)
    with pytest.raises(ValueError, match="negative"):
        DistillJob(loss="kd", student="", teacher="", teachers=["a", "b"], teacher_weights=[1, -1])
    assert DistillJob(loss="kd", student="", teacher="", weight=-1, allow_negative_weight=True).weight == -1


def test_numeric_strings_are_rejected_with_the_field_path(tmp_path):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    cfg["jobs"][0]["weight"] = "0.5"
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.weight: .*string '0\.5'"):
        train(cfg, verbose=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("T,msg", [(0, "temperature T must be > 0"), ("4", r"temperature T must be > 0 \(a number\), got '4' of type str"),
                                   (float("nan"), "temperature T must be > 0 and finite, got nan")])
def test_temperature_is_checked_with_its_name(tmp_path, capsys, T, msg):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    cfg["jobs"][0]["loss"] = {"type": "kd", "T": T}
    rc, err = _cli(capsys, "train", str(_yaml(tmp_path, cfg)), "--quiet")
    assert rc == 2 and "Traceback" not in err and re.search(f"kd: {msg}", err), err


def test_teacher_sharing_parameters_with_the_student_is_refused():
    student = TinyNet()
    with pytest.raises(DistillerError, match="shares 4 parameter"):
        Distiller(student, nn.Sequential(student), [DistillJob(loss="kd", student="", teacher="")])
    assert all(p.requires_grad for p in student.parameters())


def test_untrained_teacher_is_an_error_even_when_quiet(tmp_path, capsys):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    del cfg["allow_untrained_teacher"]
    rc, err = _cli(capsys, "train", str(_yaml(tmp_path, cfg)), "--quiet")
    assert rc == 2 and "['t0'] have no weights" in err and "allow_untrained_teacher" in err
    assert not (tmp_path / "r").exists()


def test_tap_count_mismatch_exits_2(tmp_path, capsys):
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    cfg["jobs"][1]["teacher"] = ["conv1", "fc"]
    rc, err = _cli(capsys, "train", str(_yaml(tmp_path, cfg)), "--quiet")
    assert rc == 2 and "1 student taps" in err and "2 teacher taps" in err and "Traceback" not in err


def test_teacher_in_another_dtype_runs_in_its_own_and_hands_back_the_students():
    """A float64 teacher beside a float32 student (formerly refused): the teacher gets float64 inputs, the
    loss gets float32 taps, and the result is the float32 teacher's within rounding."""
    s, t = TinyNet(), TinyNet(width=8)
    x = torch.randn(2, 1, 8, 8)
    want = Distiller(copy.deepcopy(s), copy.deepcopy(t), [DistillJob(loss="kd", student="", teacher="")])(x)[1]
    d = Distiller(s, t.double(), [DistillJob(loss="kd", student="", teacher="")])
    got = d(x)[1]
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-5)


def test_confidence_combine_with_dict_outputs_is_a_clear_error():
    class DictNet(TinyNet):
        def forward(self, x):
            return {"logits": super().forward(x)}

    d = Distiller(TinyNet(), {"a": DictNet(width=8), "b": DictNet(width=8)},
                  [DistillJob(loss="kd", student="fc", teacher="fc", combine="confidence")])
    with pytest.raises(JobError, match="teacher 'a' returns dict.*combine='mean'"):
        d(torch.randn(2, 1, 8, 8), labels=torch.tensor([0, 1]))


def test_torch_compile_of_the_distiller_is_refused_with_the_alternative():
    d = Distiller(TinyNet(), TinyNet(width=8), [DistillJob(loss="kd", student="", teacher="")])
    with pytest.raises(DistillerError, match=r"distiller\.student\.compile\(\)"):
        torch.compile(d)(torch.randn(2, 1, 8, 8))
    d(torch.randn(2, 1, 8, 8))  # the eager Distiller is unaffected


# ------------------------------------------------------------------------------ divergence guard
class NaNAtStep(TinyNet):
    """Its training forward number ``at`` (1-based) returns NaN logits."""

    def __init__(self, at: int, **kw):
        super().__init__(**kw)
        self.at, self.calls = at, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


def test_nan_is_caught_at_the_step_it_happens_and_names_the_task_loss(tmp_path):
    cfg = run_config(str(tmp_path / "r"), epochs=1, jobs=False)  # log_every=4: the old check saw step 4
    with pytest.raises(TrainingError, match=r"epoch 1, step 3 \(source: the task loss"):
        train(cfg, model=NaNAtStep(3), verbose=False)
    assert not (tmp_path / "r" / "best.pt").exists() and not (tmp_path / "r" / "last.pt").exists()


def test_nan_from_a_teacher_names_the_job_and_the_teacher(tmp_path):
    teacher = TinyNet(width=8)
    with torch.no_grad():
        teacher.fc.bias.fill_(float("nan"))
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    with pytest.raises(TrainingError, match=r"step 1 .*distillation job 'kd'.*teacher 't0' output/taps \['\(output\)'\]"):
        train(cfg, teachers={"t0": teacher}, verbose=False)


def test_nan_in_the_input_batch_is_named(tmp_path):
    from test_engine_support import Blobs
    train_ds = Blobs(64)
    train_ds.x[5] = float("nan")
    with pytest.raises(TrainingError, match="the input batch itself holds NaN"):
        train(run_config(str(tmp_path / "r"), epochs=1, jobs=False), datasets=(train_ds, Blobs(16, seed=2)),
              verbose=False)


def test_an_exploding_loss_stops_with_lr_advice_and_saves_nothing(tmp_path):
    cfg = run_config(str(tmp_path / "r"), epochs=2, jobs=False, optimizer={"name": "sgd", "lr": 1e3},
                     schedule={"name": "none"}, log_every=1)
    with pytest.raises(TrainingError, match=r"lower train\.optimizer\.lr \(now 1000"):
        train(cfg, verbose=False)
    assert not list((tmp_path / "r").glob("*.pt"))


def test_explosion_factor_is_relative_to_the_first_logged_loss():
    g = DivergenceGuard(["total loss"], torch.device("cpu"), lr=0.1, factor=100.0)
    g.check_synced(2.0, 1, "epoch 1, step 1")
    g.check_synced(150.0, 2, "epoch 1, step 2")  # 75× : allowed
    with pytest.raises(TrainingError, match=r"exploded at epoch 1, step 3: 250.*100 × the first logged loss 2"):
        g.check_synced(250.0, 3, "epoch 1, step 3")
    DivergenceGuard(["total loss"], torch.device("cpu"), 0.1, None, reference=1.0).check_synced(1e9, 1, "x")


def test_device_side_recording_names_the_first_bad_step():
    """The CUDA path (no per-step host sync), exercised on CPU: the error at a log step names step 2."""
    g = DivergenceGuard(["total loss", "task loss"], torch.device("cpu"), lr=0.1, factor=None)
    g.sync_each_step = False
    x = torch.zeros(2, 3)
    g.observe(torch.tensor([1.0, 1.0], dtype=torch.float64), x, 1, "epoch 1, step 1")
    g.observe(torch.tensor([float("inf"), float("inf")], dtype=torch.float64), x, 2, "epoch 1, step 2")
    g.observe(torch.tensor([float("nan"), 1.0], dtype=torch.float64), x, 3, "epoch 1, step 3")
    with pytest.raises(TrainingError, match=r"epoch 1, step 2 \(detected at step 4\) \(source: the task loss"):
        g.check_synced(1.0, 4, "epoch 1, step 4")


# ------------------------------------------------------------------------------ user errors exit 2
def _fmnist_cfg(tmp_path, root):
    cfg = run_config(str(tmp_path / "r"), epochs=1, jobs=False)
    cfg["data"] = {"name": "fashion_mnist", "root": str(root), "batch_size": 4}
    cfg["model"]["kwargs"]["num_classes"] = 10
    return _yaml(tmp_path, cfg)


def test_truncated_idx_file_exits_2(tmp_path, capsys):
    from kdforge.data import fashion_mnist as fm
    root = fake_dataset(tmp_path / "fm", gz=False)
    img = root / fm.FILES[True][0]
    img.write_bytes(img.read_bytes()[:1000])
    rc, err = _cli(capsys, "train", str(_fmnist_cfg(tmp_path, root)), "--quiet")
    assert rc == 2 and "truncated" in err and "Traceback" not in err


def test_label_image_count_mismatch_exits_2(tmp_path, capsys):
    from test_data import write_idx

    from kdforge.data import fashion_mnist as fm
    root = fake_dataset(tmp_path / "fm", gz=False)
    write_idx(root / fm.FILES[True][1], (torch.arange(7) % 10).numpy().astype("uint8"))
    rc, err = _cli(capsys, "train", str(_fmnist_cfg(tmp_path, root)), "--quiet")
    assert rc == 2 and "12 images but" in err and "7 labels" in err


def test_non_utf8_yaml_exits_2(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    rc, err = _cli(capsys, "train", str(p))
    assert rc == 2 and "not UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize("override,msg", [
    ("train.epochs.x=1", "train.epochs is int 2, not a mapping"),
    ("jobs.5.weight=1", "jobs is a list of 2 item"),
    ("jobs.kd.weight=1", "'kd' is not an index"),
    ("train..epochs=1", "must look like key.path=value"),
])
def test_bad_set_path_exits_2(tmp_path, capsys, override, msg):
    cfg = _yaml(tmp_path, run_config(str(tmp_path / "r"), epochs=2))
    rc, err = _cli(capsys, "train", str(cfg), "--set", override)
    assert rc == 2 and msg in err and "Traceback" not in err


def test_disk_full_is_named_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    cfg = _yaml(tmp_path, run_config(str(tmp_path / "r"), epochs=2, jobs=False))
    real_save = torch.save

    def save(obj, f, *a, **k):  # the disk fills up during the second epoch's checkpoints
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    rc, err = _cli(capsys, "train", str(cfg), "--quiet")
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert rc == 2 and "the disk is full" in err and "previous best.pt is intact" in err and "Traceback" not in err
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_debug_shows_the_traceback(tmp_path, capsys):
    cfg = _yaml(tmp_path, run_config(str(tmp_path / "r"), epochs=2))
    rc, err = _cli(capsys, "--debug", "train", str(cfg), "--set", "train.epochz=3")
    assert rc == 2 and "Traceback" in err and "train.epochz" in err


# ------------------------------------------------------------------------------ bounded config reading
def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    cfg = run_config(str(tmp_path / "r"), epochs=1)
    text = "\n".join(lines) + "\n" + yaml.safe_dump(cfg)
    text = text.replace("kwargs:\n    bn: false", "kwargs:\n    bn: false\n    junk: *a8", 1)
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    t0 = time.perf_counter()
    rc, err = _cli(capsys, "train", str(p))
    assert rc == 2 and "alias" in err and len(err) < 1000 and time.perf_counter() - t0 < 10


def test_recursive_alias_and_oversized_yaml_are_refused():
    with pytest.raises(ValueError, match="recursive alias"):
        load_yaml("a: &a [1, *a]")
    with pytest.raises(ValueError, match="limited to"):
        load_yaml("x: " + "1" * 100, max_bytes=50)


def test_yaml_reads_exponent_floats_as_numbers():
    assert load_yaml("lr: 1e-3\nw: 5E4\ns: '1e-3'") == {"lr": 1e-3, "w": 5e4, "s": "1e-3"}


def test_huge_values_are_not_formatted_into_errors(tmp_path, capsys):
    cfg = run_config(str(tmp_path / "r"), epochs=1, jobs=False)
    cfg["model"]["kwargs"]["blob"] = "x" * 200_000  # TinyNet takes no `blob`
    rc, err = _cli(capsys, "train", str(_yaml(tmp_path, cfg)))
    assert rc == 2 and "blob" in err and len(err) < 2000


@pytest.mark.parametrize("body,msg", [
    ("s = 'ab'\n" + "s = s + s\n" * 40, "longer than 100,000 characters"),
    ("d = dict(a=1)\n" + "d = dict(a=d, b=d)\n" * 40, "more than 100,000 entries"),
])
def test_py_config_reader_is_bounded(tmp_path, capsys, body, msg):
    p = tmp_path / "bomb.py"
    p.write_text(body)
    rc, err = _cli(capsys, "convert", str(p))
    assert rc == 2 and msg in err


def test_py_config_integer_growth_is_bounded(tmp_path):
    from kdforge.config.translators.pyconfig import read_pyconfig
    p = tmp_path / "pow.py"
    p.write_text("x = 9\n" + "x = x ** 64\n" * 6 + "y = 2 ** 60\n" + "y = y * y\n" * 30 + "z = 3 ** 4\n")
    t0 = time.perf_counter()
    module, _, unevaluated = read_pyconfig(p)
    assert time.perf_counter() - t0 < 5 and module["z"] == 81
    assert isinstance(module["x"], str) and isinstance(module["y"], str) and unevaluated
