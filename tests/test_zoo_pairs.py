"""benchmarks/zoo.py's second pair (resnet8x4 ← resnet32x4 on 1×28×28): every recipe of
configs/fmnist/methods/ moved to it by ``pair_overrides`` validates and builds; a representative
subset takes one distillation step; a tap with no ResNet equivalent is an error; a pair's report
section leaves the other pair's section alone. No data, no training: untrained models."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from kdforge.build import build_distiller, build_model_from_spec
from kdforge.config.loading import read_config
from kdforge.config.run import load_run_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zoo_bench", ROOT / "benchmarks" / "zoo.py")
zoo = importlib.util.module_from_spec(_spec)
sys.modules["zoo_bench"] = zoo  # dataclasses look their module up there
_spec.loader.exec_module(zoo)  # type: ignore[union-attr]

pytestmark = pytest.mark.filterwarnings("ignore::kdforge.build.UntrainedTeacherWarning")

STEP = ["kd", "fitnet", "at", "ofd", "crd", "vid", "byot", "multi_teacher_mean"]


def _resnet_overrides(method: str) -> list[str]:
    raw = read_config(zoo.METHODS_DIR / f"{method}.yaml")
    sets = zoo.pair_overrides(raw, "resnet") + ["allow_untrained_teacher=true"]
    sets += [f"teachers.{n}.weights=null" for n in raw.get("teachers") or {}]
    for i, job in enumerate(raw.get("jobs") or []):
        if isinstance(job.get("loss"), dict) and job["loss"].get("type") == "crd":
            sets += [f"jobs.{i}.loss.n_data=16", f"jobs.{i}.loss.nce_k=4"]
    return sets


def test_cnn_pair_is_the_recipes_own():
    raw = read_config(zoo.METHODS_DIR / "ofd.yaml")
    assert zoo.pair_overrides(raw, "cnn") == []


@pytest.mark.parametrize("method", zoo.ORDER)
def test_every_recipe_builds_on_the_resnet_pair(method: str):
    cfg = load_run_config(str(zoo.METHODS_DIR / f"{method}.yaml"), _resnet_overrides(method))
    assert cfg.student.name == "resnet8x4" and cfg.student.kwargs == {"num_classes": 10, "in_channels": 1}
    assert all(t.name == "resnet32x4" and t.kwargs == {"num_classes": 10, "in_channels": 1}
               for t in cfg.teachers.values())
    taps = [t for j in cfg.jobs for t in (*j.student, *j.teacher)]
    assert not any(t.startswith("stages") for t in taps), taps
    if not cfg.jobs:
        assert type(build_model_from_spec(cfg.student, "student")).__name__ == "ResNet"
        return
    with build_distiller(cfg) as d:  # builds the models and resolves every tap
        assert type(d.student).__name__ == "ResNet"


def test_pre_relu_taps_map_to_each_models_last_block():
    sets = zoo.pair_overrides(read_config(zoo.METHODS_DIR / "ofd.yaml"), "resnet")
    assert 'jobs.0.student=["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"]' in sets
    assert 'jobs.0.teacher=["layer1.4.bn2", "layer2.4.bn2", "layer3.4.bn2"]' in sets
    # self-distillation: the "teacher" taps are on the student
    byot = zoo.pair_overrides(read_config(zoo.METHODS_DIR / "byot.yaml"), "resnet")
    assert 'jobs.0.teacher=["layer3", "fc"]' in byot and not any(s.startswith("teachers.") for s in byot)


@pytest.mark.parametrize("method", STEP)
def test_one_distillation_step_on_the_resnet_pair(method: str):
    cfg = load_run_config(str(zoo.METHODS_DIR / f"{method}.yaml"), _resnet_overrides(method))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    ctx = {"labels": y}
    with build_distiller(cfg) as d:
        if cfg.data.with_index:
            d.set_dataset_labels(torch.arange(16) % 4)
            ctx["index"] = torch.tensor([0, 1, 2, 3])
        d.train()
        out, kd = d(x, **ctx)
        loss = cfg.train.ce_weight * torch.nn.functional.cross_entropy(out, y) + kd
        loss.backward()
        assert out.shape == (4, 10) and math.isfinite(kd.item()) and kd.item() != 0.0
        assert d.student.conv1.weight.grad is not None
        assert all(p.grad is None for t in d.teachers.values() for p in t.parameters())


def test_a_tap_without_resnet_equivalent_is_an_error():
    raw = read_config(zoo.METHODS_DIR / "fitnet.yaml")
    raw["jobs"][0]["student"] = "stages.1.body.0"
    with pytest.raises(zoo.PairError, match=r"jobs\.0\.student\.0: tap 'stages\.1\.body\.0' has no equivalent on "
                                            r"resnet8x4.*RESNET_TAPS"):
        zoo.pair_overrides(raw, "resnet")
    raw = read_config(zoo.METHODS_DIR / "ofd.yaml")
    raw["jobs"][0]["loss"] = {"type": "ofd", "teacher_bn": "stages.2.bn"}
    with pytest.raises(zoo.PairError, match=r"jobs\.0\.loss\.teacher_bn: 'stages\.2\.bn' names a CNN module"):
        zoo.pair_overrides(raw, "resnet")
    raw = read_config(zoo.METHODS_DIR / "kd.yaml")
    raw["jobs"][0]["teacher"] = "@feats"
    with pytest.raises(zoo.PairError, match="has no equivalent"):
        zoo.pair_overrides(raw, "resnet")


def test_report_section_keeps_the_other_pair(tmp_path: Path):
    doc = zoo.splice_section(None, "cnn", "## CNN\n\ncnn table")
    assert "cnn table" in doc and "Not measured yet" in doc and doc.count("## What these tables are not") == 1
    doc = zoo.splice_section(doc, "resnet", "## ResNet\n\nresnet table v1")
    doc = zoo.splice_section(doc, "resnet", "## ResNet\n\nresnet table v2")
    assert "cnn table" in doc and "resnet table v2" in doc and "v1" not in doc and "Not measured yet" not in doc
    assert zoo.sections_of(doc) == {"cnn": "## CNN\n\ncnn table", "resnet": "## ResNet\n\nresnet table v2"}
    assert doc.index("<!-- zoo:cnn -->") < doc.index("<!-- zoo:resnet -->") < doc.index("## What these tables")
    assert doc.count(zoo.HEAD[0]) == 1
    # report() on a run dir with no runs writes the pair's section only and keeps the shipped CNN section
    shipped = (ROOT / "docs" / "benchmarks.md").read_text()
    path = tmp_path / "benchmarks.md"
    path.write_text(shipped)
    zoo.report(tmp_path / "runs", ["baseline", "kd"], [0], [1, 2], {"pair": "resnet", "subset": 64, "epochs": 1},
               {"teacher": tmp_path / "t0"}, path, tmp_path / "zoo_resnet.png", "resnet")
    after = zoo.sections_of(path.read_text())
    assert after["cnn"] == zoo.sections_of(shipped)["cnn"]
    assert "resnet8x4 ← resnet32x4" in after["resnet"] and "kd seed 2" in after["resnet"]


def test_passthrough_sets_come_last_and_threads_reach_the_env(monkeypatch, tmp_path: Path):
    teachers = {"teacher": tmp_path / "t0", "teacher2": tmp_path / "t1"}
    cmd = zoo.method_command("crd", 1, tmp_path / "run", 900, 2, teachers, "resnet", ["data.num_workers=4"])
    assert cmd[-2:] == ["--set", "data.num_workers=4"]
    assert "jobs.0.loss.nce_k=300" in cmd and "student.name=resnet8x4" in cmd
    seen = {}

    def fake_call(cmd, stdout, stderr, env, cwd):
        seen.update(env)
        return 0
    monkeypatch.setattr(zoo.subprocess, "call", fake_call)
    zoo._run(["true"], tmp_path / "log", threads=3)
    assert seen["OMP_NUM_THREADS"] == "3"


def test_a_run_dir_refuses_other_settings(tmp_path: Path):
    meta = {"pair": "resnet", "subset": 64, "epochs": 1, "teacher_epochs": 1, "sets": []}
    zoo.record_meta(tmp_path, meta)
    with pytest.raises(SystemExit, match="subset: 64 there, 128 now"):
        zoo.record_meta(tmp_path, {**meta, "subset": 128})


def test_a_finished_run_of_another_setting_is_refused(tmp_path: Path):
    run = tmp_path / "kd" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    (run / "config.yaml").write_text("student: {name: cnn}\ndata: {train_subset: 5000}\ntrain: {epochs: 3}\n")
    zoo.check_done(run, 5000, 3, "cnn")
    with pytest.raises(SystemExit, match=r"data\.train_subset 5000 \(asked 60000\).*student\.name cnn \(asked resnet8x4\)"):
        zoo.check_done(run, 60000, 3, "resnet8x4")


def test_cache_benchmark_moves_its_kd_and_baseline_configs_to_the_resnet_pair():
    spec = importlib.util.spec_from_file_location("cache_bench", ROOT / "benchmarks" / "cache.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    assert bench._pair_sets(bench.KD, "cnn") == [] and bench._pair_sets(bench.BASELINE, "cnn") == []
    kd = load_run_config(str(bench.KD), bench._pair_sets(bench.KD, "resnet") + ["teachers.teacher.weights=null",
                                                                                "allow_untrained_teacher=true"])
    base = load_run_config(str(bench.BASELINE), bench._pair_sets(bench.BASELINE, "resnet"))
    assert kd.student.name == base.student.name == "resnet8x4"
    assert kd.teachers["teacher"].name == "resnet32x4" and not base.teachers
