"""Every per-method recipe under configs/fmnist/methods/ trains one step through `kdforge train`.

The recipes are what benchmarks/zoo.py measures for docs/benchmarks.md; this test keeps each of them
runnable (a renamed tap, loss argument or connector fails here, not in a two-hour sweep). Teachers are
untrained here (`allow_untrained_teacher`): the test checks the wiring, not the accuracy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from kdforge.cli import main
from kdforge import load_config

try:
    from kdforge.data import load_fashion_mnist
    load_fashion_mnist(None, train=False)
    HAVE_FMNIST = True
except (FileNotFoundError, OSError):
    HAVE_FMNIST = False

ROOT = Path(__file__).resolve().parents[1]
METHODS = sorted((ROOT / "configs" / "fmnist" / "methods").glob("*.yaml"))
#: the table's rows: every method the per-method issue lists, and the combinations
EXPECTED = {"baseline", "kd", "dkd", "dist", "logit_std", "fitnet", "at", "ft", "ab", "ofd", "vid", "nst", "mgd",
            "cwd", "rkd", "crd", "irg", "pkt", "sp", "cc", "byot", "multi_teacher_mean",
            "multi_teacher_confidence", "meal_v2", "kd_at", "kd_fitnet", "kd_crd"}


def test_every_method_has_a_recipe():
    assert {p.stem for p in METHODS} == EXPECTED


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed (make data)")
@pytest.mark.parametrize("path", METHODS, ids=lambda p: p.stem)
def test_method_recipe_trains_one_step(path: Path, tmp_path: Path):
    raw = yaml.safe_load(path.read_text())
    sets = ["train.epochs=1", "data.train_subset=128", "data.test_subset=128", "allow_untrained_teacher=true"]
    cfg = load_config(str(path))
    sets += [f"teachers.{name}.weights=null" for name in (cfg.teachers or {})]
    if any(j.loss.get("type") == "crd" for j in cfg.jobs if isinstance(j.loss, dict)):
        assert raw["data"]["with_index"] is True
    argv = ["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    # CRD's memory bank must match the (sub)set it indexes
    for i, job in enumerate(cfg.jobs):
        if isinstance(job.loss, dict) and job.loss.get("type") == "crd":
            argv += ["--set", f"jobs.{i}.loss.n_data=128"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (tmp_path / "run" / "best.pt").exists()
    loss = summary.get("final_train_loss", summary.get("train_loss"))
    if loss is not None:
        assert math.isfinite(loss)


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST is not installed (make data)")
def test_bfloat16_teacher_trains_a_float32_student(tmp_path: Path):
    """`teachers.<name>.dtype: bfloat16` converts the teacher after loading; the student stays float32."""
    import torch

    from kdforge.build import build_distiller

    path = ROOT / "configs" / "fmnist" / "methods" / "kd_fitnet.yaml"
    sets = ["teachers.teacher.weights=null", "allow_untrained_teacher=true", "teachers.teacher.dtype=bfloat16"]
    d = build_distiller(str(path), overrides=sets)
    assert next(d.teachers["teacher"].parameters()).dtype == torch.bfloat16
    assert next(d.student.parameters()).dtype == torch.float32
    argv = ["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--set", "train.epochs=1",
            "--set", "data.train_subset=128", "--set", "data.test_subset=128"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    state = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state["student"].values() if v.is_floating_point())


def test_teacher_dtype_is_validated():
    from kdforge.config import ConfigError

    with pytest.raises((ConfigError, ValueError), match="dtype"):
        load_config(str(ROOT / "configs" / "fmnist" / "methods" / "kd.yaml"), ["teachers.teacher.dtype=int8"])
