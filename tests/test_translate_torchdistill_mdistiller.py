"""`kdforge convert` for torchdistill YAML and mdistiller yacs configs (fixtures in their real formats)."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from kdforge import build_distiller
from kdforge.cli import main
from kdforge.config.run import load_run_config
from kdforge.config.translate import TranslationError, convert_file, detect_source, translate
from user_data_helpers import write_cifar

DATA = Path(__file__).parent / "data" / "translate"


def _convert(name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return yaml.safe_load(convert_file(DATA / name))


def test_detects_both_sources():
    from kdforge.config.translators.torchdistill import TorchdistillLoader

    td = yaml.load((DATA / "torchdistill_kd_cifar10.yaml").read_text(), Loader=TorchdistillLoader)  # noqa: S506
    md = yaml.safe_load((DATA / "mdistiller_kd.yaml").read_text())
    assert detect_source(td) == "torchdistill" and detect_source(md) == "mdistiller"


def test_torchdistill_kd_matches_its_loss_formula():
    cfg = _convert("torchdistill_kd_cifar10.yaml")
    run = load_run_config(cfg)
    assert (run.data.name, run.data.root, run.data.batch_size) == ("cifar10", "./resource/dataset/cifar10", 128)
    assert run.model.kwargs["num_classes"] == 10 and run.name == "cifar10-resnet20_from_resnet56"
    assert run.train.schedule.kwargs["milestones"] == [91, 136] and run.train.epochs == 182
    assert run.train.optimizer.name == "sgd" and run.train.optimizer.kwargs["weight_decay"] == 0.0001
    # torchdistill's KDLoss: alpha * CE + (1 - alpha) * T^2 * KL(teacher || student), alpha 0.9, T 4
    d = build_distiller(cfg, student=torch.nn.Linear(6, 10), teachers={"teacher": torch.nn.Linear(6, 10)})
    x, y = torch.randn(8, 6), torch.randint(0, 10, (8,))
    out, kd = d(x, labels=y)
    with torch.no_grad():
        t = d.teachers["teacher"](x)
    kl = F.kl_div(F.log_softmax(out / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    theirs = 0.9 * F.cross_entropy(out, y) + 0.1 * 16 * kl
    ours = run.train.ce_weight * F.cross_entropy(out, y) + kd
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_torchdistill_at_with_forward_hooks_and_ce_wrapper():
    cfg = _convert("torchdistill_at_ilsvrc2012.yaml")
    assert [(j["student"], j["teacher"], j["weight"]) for j in cfg["jobs"]] == [("layer3", "layer3", 1000.0),
                                                                               ("layer4", "layer4", 1000.0)]
    assert cfg["jobs"][0]["loss"] == {"type": "at", "p": 2.0, "beta": 1.0}
    assert cfg["train"]["ce_weight"] == 1.0 and cfg["student"]["name"] == "torchvision:resnet18"
    assert cfg["data"] == {"name": "image_folder", "root": "~/datasets/ilsvrc2012", "augment": True,
                           "kwargs": {"size": 224}, "batch_size": 32}
    assert "weights" not in cfg["teachers"]["teacher"]  # hub weights are not downloaded; the warning says so
    text = convert_file(DATA / "torchdistill_at_ilsvrc2012.yaml")
    assert "# warning: models.teacher_model.kwargs.weights asks for pretrained hub weights" in text


@pytest.mark.extras
def test_torchdistill_at_builds_on_real_torchvision_models():
    pytest.importorskip("torchvision")
    cfg = _convert("torchdistill_at_ilsvrc2012.yaml")
    for spec in (cfg["student"], cfg["teachers"]["teacher"]):
        spec["kwargs"]["num_classes"] = 10
    d = build_distiller(cfg)
    _, loss = d(torch.randn(2, 3, 64, 64))
    assert loss.isfinite() and loss > 0


def test_torchdistill_errors_and_undeclared_hooks():
    base = {"models": {"teacher_model": {"key": "resnet20", "kwargs": {"num_classes": 10}},
                       "student_model": {"key": "resnet8", "kwargs": {"num_classes": 10}}},
            "train": {"student": {"forward_hook": {"output": []}}, "teacher": {"forward_hook": {"output": []}},
                      "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {
                          "fsp": {"criterion": {"key": "FSPLoss", "kwargs": {}}, "weight": 1.0}}}}}}
    with pytest.raises(TranslationError, match="criterion 'FSPLoss' is not translated.*no counterpart"):
        translate(base)
    base["train"]["criterion"]["kwargs"]["sub_terms"] = {"at": {"criterion": {"key": "ATLoss", "kwargs": {
        "at_pairs": {"p1": {"student": {"path": "layer3", "io": "output"}, "teacher": {"path": "layer3", "io": "output"}}},
        "mode": "code"}}, "weight": 1.0}}
    with pytest.warns(UserWarning, match="'layer3' is not declared in train.student.forward_hook.output"):
        cfg = translate(base)
    assert "data" not in cfg  # no datasets: section → no data:, so `kdforge train` stops and lists the datasets


def test_mdistiller_dkd_carries_defaults_dataset_and_num_classes():
    cfg = _convert("mdistiller_dkd_res32x4_res8x4.yaml")
    run = load_run_config(cfg)
    assert run.model.name == "resnet8x4" and run.model.kwargs == {"num_classes": 100}
    assert run.teachers["teacher"].name == "resnet32x4"
    assert run.data.name == "cifar100" and run.data.root is None and run.data.batch_size == 64
    assert run.jobs[0].loss == {"type": "dkd", "alpha": 1.0, "beta": 2.0, "T": 4.0}
    assert run.jobs[0].warmup_iters == 20 * 782  # mdistiller's 20-epoch ramp, per step
    assert run.train.ce_weight == 1.0 and run.train.optimizer.kwargs["weight_decay"] == 0.0005
    text = convert_file(DATA / "mdistiller_dkd_res32x4_res8x4.yaml")
    assert "not from this file: DKD.CE_WEIGHT, DKD.ALPHA, DKD.T, DKD.WARMUP" in text


def test_mdistiller_kd_fitnet_and_unsupported():
    kd = _convert("mdistiller_kd.yaml")
    assert kd["train"]["ce_weight"] == 0.1 and kd["jobs"][0]["weight"] == 0.9 and kd["jobs"][0]["loss"]["T"] == 4.0
    fit = _convert("mdistiller_fitnet.yaml")
    job = fit["jobs"][0]
    assert (job["student"], job["teacher"], job["weight"]) == (["layer2"], ["layer2"], 100.0)
    assert job["connector"] == {"type": "conv3x3_bn", "relu": True}
    d = build_distiller(fit)
    _, loss = d(torch.randn(2, 3, 32, 32))
    assert loss.isfinite()
    crd = yaml.safe_load((DATA / "mdistiller_kd.yaml").read_text())
    crd["DISTILLER"]["TYPE"] = "CRD"
    with pytest.raises(TranslationError, match="'CRD' is not translated.*kdforge has CRD as loss 'crd'"):
        translate(crd)
    bad = yaml.safe_load((DATA / "mdistiller_fitnet.yaml").read_text())
    bad["DISTILLER"]["STUDENT"] = "MobileNetV2"
    with pytest.raises(TranslationError, match="write the job's student/teacher taps by hand"):
        translate(bad)


def test_converted_mdistiller_config_trains(tmp_path, monkeypatch, capsys):
    """kdforge convert → set data.root → kdforge train: the translated recipe runs on a CIFAR-100 archive."""
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "cifar", "cifar100", n_train=16, n_test=8)
    assert main(["convert", str(DATA / "mdistiller_kd.yaml"), "-o", "kd.yaml"]) == 0
    rc = main(["train", "kd.yaml", "--set", "train.epochs=1", "--quiet", "--set", "device=cpu"])
    assert rc == 2 and "needs data.root" in capsys.readouterr().err   # never trains on made-up data
    rc = main(["train", "kd.yaml", "--data", str(tmp_path / "cifar"), "--set", "train.epochs=1", "--set", "device=cpu",
               "--set", "data.batch_size=8", "--set", "student.name=resnet8", "--set", "teachers.teacher.name=resnet14",
               "--set", "allow_untrained_teacher=true", "--quiet"])  # the converted recipe names no weights
    assert rc == 0 and (tmp_path / "runs" / "kd_res32x4_res8x4" / "best.pt").is_file()

