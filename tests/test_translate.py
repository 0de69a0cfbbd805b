"""Translators from United-Perception, mslim and MMRazor/GML configs (kdforge.config.translate).

Fixtures in tests/data/translate/ follow real configs (named in each file's header). Each test checks
the mapping, that the result validates as DistillConfig, and that build_distiller runs it on toy
models whose module paths are the fixture's paths.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from kdforge import LOSSES, RegistryError, build_distiller
from kdforge.config import ConfigError, DistillConfig, load
from kdforge.config.translate import (SOURCES, TranslationError, TranslationWarning, convert_file, detect_source,
                                      to_yaml, translate)
from kdforge.config.translators.pyconfig import read_pyconfig

DATA = Path(__file__).parent / "data" / "translate"
pytestmark = pytest.mark.filterwarnings("ignore::kdforge.config.translate.TranslationWarning")


def _yaml(name: str) -> dict:
    return yaml.safe_load((DATA / name).read_text())


def _py(name: str) -> dict:
    return read_pyconfig(DATA / name)[0]


def _quiet(data: dict, source: str | None = None) -> dict:
    with pytest.warns(TranslationWarning):  # every translation warns at least about model names
        return translate(data, source)


# ---------------------------------------------------------------- toy models with the fixtures' paths
def _block(cin: int, cout: int) -> nn.Module:
    b = nn.Module()
    b.conv, b.bn, b.relu = nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
    b.forward = lambda x: b.relu(b.bn(b.conv(x)))  # type: ignore[method-assign]
    return b


class UPCls(nn.Module):
    """``backbone`` + ``head.classifier`` (UP's base_cls_head)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.head = nn.Module()
        self.head.classifier = nn.Linear(width, 10)

    def forward(self, x):
        return self.head.classifier(self.backbone(x))


class UPNeck(nn.Module):
    """FPN-like ``neck.p2_conv … neck.p6_pool`` and the student's ``neck_adapt.conv.K.0``."""

    def __init__(self) -> None:
        super().__init__()
        self.neck = nn.Module()
        for k in range(2, 6):
            setattr(self.neck, f"p{k}_conv", nn.Conv2d(3, 8, 3, padding=1))
        self.neck.p6_pool = nn.MaxPool2d(1, stride=2)
        self.neck_adapt = nn.Module()
        self.neck_adapt.conv = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1)) for _ in range(5))

    def forward(self, x):
        feats = [getattr(self.neck, f"p{k}_conv")(nn.functional.avg_pool2d(x, 2 ** (k - 2))) for k in range(2, 6)]
        feats.append(self.neck.p6_pool(feats[-1]))
        return torch.stack([c(f).mean((1, 2, 3)) for c, f in zip(self.neck_adapt.conv, feats)], 1)


class MMCls(nn.Module):
    """mmcls-style ``backbone.layer3/4`` (blocks with ``relu``), ``neck.gap``, ``head.fc``."""

    def __init__(self, w: int, n3: int, n4: int) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.stem = nn.Conv2d(3, w, 3, padding=1)
        self.backbone.layer3 = nn.Sequential(*[_block(w, w) for _ in range(n3)])
        self.backbone.layer4 = nn.Sequential(_block(w, 2 * w), *[_block(2 * w, 2 * w) for _ in range(n4 - 1)])
        self.neck, self.head = nn.Module(), nn.Module()
        self.neck.gap = nn.AdaptiveAvgPool2d(1)
        self.head.fc = nn.Linear(2 * w, 10)

    def forward(self, x):
        b = self.backbone
        return self.head.fc(self.neck.gap(b.layer4(b.layer3(b.stem(x)))).flatten(1))


class MMSeg(nn.Module):
    """mmseg-style ``backbone`` + ``decode_head.conv_seg``."""

    def __init__(self, w: int, classes: int = 19) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU())
        self.decode_head = nn.Module()
        self.decode_head.conv_seg = nn.Conv2d(w, classes, 1)

    def forward(self, x):
        return self.decode_head.conv_seg(self.backbone(x))


class CifarNet(nn.Module):
    """RepDistiller-style ``layer1..3`` + ``linear`` (mslim's CIFAR models)."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.layer1, self.layer2, self.layer3 = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.linear = nn.Linear(4 * w, 10)

    def forward(self, x):
        return self.linear(self.layer3(self.layer2(self.layer1(x))).mean((2, 3)))


def _run(cfg: dict, student: nn.Module, teachers: dict[str, nn.Module], x: torch.Tensor | None = None) -> None:
    """Build the distiller, run one training step and check a finite loss reaching the student."""
    load(DistillConfig, cfg, context={"check_names": False})
    d = build_distiller(cfg, student=student, teachers=teachers)
    x = torch.randn(4, 3, 8, 8) if x is None else x
    out, loss = d(x, labels=torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss) and loss.dim() == 0
    (out.float().mean() + loss).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert set(d.losses) == {j["name"] for j in cfg["jobs"]}


# ---------------------------------------------------------------- detection and errors
@pytest.mark.parametrize("name, source", [
    ("up_res18_kd.yaml", "united_perception"), ("up_multi_jobs.yaml", "united_perception"),
    ("up_mimic_block_kl.yaml", "united_perception"), ("mslim_vid.yaml", "mslim"), ("mslim_irg.yaml", "mslim")])
def test_detect_yaml_sources(name, source):
    assert detect_source(_yaml(name)) == source


@pytest.mark.parametrize("name", ["mmrazor_fitnets_1x.py", "mmrazor_dkd_rkd_1x.py", "mmrazor_cwd_0x.py",
                                  "gml_cwd_psp.py"])
def test_detect_mmrazor_shapes(name):
    assert detect_source(_py(name)) == "mmrazor"


def test_unknown_shape_lists_the_recognised_ones():
    with pytest.raises(TranslationError) as e:
        translate({"model": {"type": "ResNet"}, "optimizer": {}})
    for source in SOURCES:
        assert source in str(e.value)
    assert "model, optimizer" in str(e.value)


def test_unknown_and_mismatched_source():
    with pytest.raises(TranslationError, match="unknown source 'detectron'"):
        translate(_yaml("mslim_vid.yaml"), "detectron")
    with pytest.raises(TranslationError, match="does not have the mmrazor shape"):
        translate(_yaml("mslim_vid.yaml"), "mmrazor")
    assert _quiet(_yaml("up_res18_kd.yaml"), "UP")["jobs"][0]["name"] == "res152_to_res18"  # alias


# ---------------------------------------------------------------- United-Perception
def test_up_single_job_kl_on_logits():
    cfg = _quiet(_yaml("up_res18_kd.yaml"))
    assert cfg["student"] == {"name": "resnet18", "weights": "/mnt/lustre/share/res18/res18.pth.tar",
                              "weights_key": "model"}
    # teacher_weight is the teacher's checkpoint path (kd_runner.load_teacher_weight reads state['model'])
    assert cfg["teachers"] == {"teacher": {"name": "resnet152", "weights": "/mnt/lustre/share/resnet152/teacher.pth.tar",
                                           "weights_key": "model"}}
    (job,) = cfg["jobs"]
    assert job == {"name": "res152_to_res18", "teachers": ["teacher"], "student": ["head.classifier"],
                   "teacher": ["head.classifier"], "loss": {"type": "kd", "T": 1.0}, "weight": 1.0, "warmup_iters": 0}
    _run(cfg, UPCls(8), {"teacher": UPCls(16)})


def test_up_mimic_block_weights_multiply_and_warmup():
    cfg = _quiet(_yaml("up_mimic_block_kl.yaml"))
    (job,) = cfg["jobs"]
    assert job["loss"] == {"type": "kd", "T": 1.0}
    assert job["weight"] == pytest.approx(2.0 * 0.5) and job["warmup_iters"] == 100
    assert cfg["teachers"]["teacher0"]["weights"] == "checkpoints/teacher0/ckpt_best.pth"
    _run(cfg, UPCls(8), {"teacher0": UPCls(16)})


def test_up_multi_jobs_multi_teachers():
    with pytest.warns(TranslationWarning) as rec:
        cfg = translate(_yaml("up_multi_jobs.yaml"))
    msgs = " | ".join(str(w.message) for w in rec)
    assert "'FRS' is a detector-specific mimicker" in msgs and "['batch_mean', 'feat_norm']" in msgs
    frs, base = cfg["jobs"]
    assert frs["name"] == "mimic_job0" and frs["loss"] == "frs" and frs["teachers"] == ["teacher0"]
    assert frs["student"][0] == "neck_adapt.conv.0.0" and frs["teacher"][4] == "neck.p6_pool"
    assert base["teachers"] == ["teacher1", "teacher2"] and base["teacher_weights"] == [1.0, 1.0]
    assert base["loss"] == "fitnet" and base["weight"] == pytest.approx(1.0 / 5)  # base mimicker: mean over pairs
    assert base["warmup_iters"] == 500 and sorted(cfg["teachers"]) == ["teacher0", "teacher1", "teacher2"]
    teachers = {k: UPNeck() for k in cfg["teachers"]}
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.loss: unknown loss 'frs'"):  # kept name → error at load
        build_distiller(cfg, student=UPNeck(), teachers=teachers)
    _run({**cfg, "jobs": [base]}, UPNeck(), teachers)


def test_up_errors_name_the_key():
    data = _yaml("up_multi_jobs.yaml")
    data["mimic"]["mimic_job1"]["teacher0"] = data["mimic"]["mimic_job0"]["teacher0"]
    with pytest.raises(TranslationError, match="teacher 'teacher0' is configured in two jobs"):
        translate(data)
    data = _yaml("up_res18_kd.yaml")
    data["mimic"]["teacher"]["mimic_name"] = ["head.classifier", "backbone"]
    with pytest.raises(TranslationError, match=r"mimic.teacher.mimic_name has 2 modules for 1"):
        translate(data)
    with pytest.raises(TranslationError, match="mimic_as_jobs"):
        translate({"mimic": {"mimic_name": "x", "teacher": {"mimic_name": ["fc"]}}})


# ---------------------------------------------------------------- mslim
def test_mslim_one_job_per_pair():
    cfg = _quiet(_yaml("mslim_vid.yaml"))
    assert cfg["student"] == {"name": "resnet20"} and cfg["teachers"] == {"teacher": {"name": "resnet56"}}
    assert [j["name"] for j in cfg["jobs"]] == ["vid_layer1", "vid_layer2", "vid_layer3"]
    assert cfg["jobs"][2]["loss"] == {"type": "vid", "mid_channels": 64, "init_pred_var": 5.0, "eps": 1e-5}
    assert [j["student"] for j in cfg["jobs"]] == [["layer1"], ["layer2"], ["layer3"]]
    _run(cfg, CifarNet(4), {"teacher": CifarNet(8)})


def test_mslim_single_loss_over_all_layers():
    with pytest.warns(TranslationWarning, match="pooled"):
        cfg = translate(_yaml("mslim_irg.yaml"))
    (job,) = cfg["jobs"]
    assert job["student"] == ["layer2", "layer3", "linear"]
    assert job["loss"] == {"type": "irg", "w_vert": 0.1, "w_edge": 5.0, "w_tran": 5.0}
    _run(cfg, CifarNet(4), {"teacher": CifarNet(8)})


def test_mslim_python_script_is_read_not_run():
    text = convert_file(DATA / "mslim_train_kd.py")
    assert "mslim" not in sys.modules  # the script's imports were never executed
    cfg = yaml.safe_load(text)
    assert cfg["jobs"] == [{"name": "kd_linear", "teachers": ["teacher"], "student": ["linear"],
                            "teacher": ["linear"], "loss": {"type": "kd", "T": 4}, "weight": 0.2}]
    _run(cfg, CifarNet(4), {"teacher": CifarNet(8)})


def test_mslim_teacher_out_layer_adds_a_kd_job_and_errors():
    data = {**_yaml("mslim_vid.yaml"), "teacher_out_layer": ["linear"]}
    assert _quiet(data)["jobs"][-1] == {"name": "kd_out", "teachers": ["teacher"], "student": ["linear"],
                                        "teacher": ["linear"], "loss": "kd", "weight": 1.0}
    with pytest.raises(TranslationError, match="teacher_distill_layer has 2"):
        translate({**_yaml("mslim_vid.yaml"), "teacher_distill_layer": ["layer1", "layer2"]})
    with pytest.raises(TranslationError, match="2 losses for 3 layer pairs"):
        translate({**_yaml("mslim_vid.yaml"), "loss": [{"type": "vid"}] * 2, "weights": [1, 1]})
    with pytest.raises(TranslationError, match="weights has 1 entries for 3 losses"):
        translate({**_yaml("mslim_vid.yaml"), "weights": [1.0]})


def test_unknown_loss_is_kept_with_a_warning_and_fails_at_build():
    data = {**_yaml("mslim_irg.yaml"), "loss": [{"type": "irgg"}]}
    with pytest.warns(TranslationWarning, match="'irgg' has no kdforge equivalent"):
        cfg = translate(data)
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.loss: unknown loss 'irgg'\. Did you mean 'irg'"):
        build_distiller(cfg, student=CifarNet(4), teachers={"teacher": CifarNet(8)})


# ---------------------------------------------------------------- MMRazor / GML
def test_mmrazor_1x_fitnets_recorders_connectors_mappings():
    with pytest.warns(TranslationWarning) as rec:
        cfg = translate(_py("mmrazor_fitnets_1x.py"))
    msgs = " | ".join(str(w.message) for w in rec)
    assert "record_idx=1" in msgs and "_base_ configs are not merged" in msgs
    s4, s3, kl = cfg["jobs"]
    assert s4 == {"name": "loss_s4", "teachers": ["teacher"], "student": ["backbone.layer4.1.relu"],
                  "teacher": ["backbone.layer4.2.relu"], "loss": "fitnet", "weight": 10.0, "connector": "conv1x1_bn"}
    assert s3["teacher"] == ["backbone.layer3.5.relu"]
    assert kl["loss"] == {"type": "kd", "T": 6} and kl["weight"] == 10.0 and "connector" not in kl
    assert cfg["teachers"]["teacher"]["weights"].endswith("resnet50_8xb32_in1k_20210831-ea4938fc.pth")
    assert cfg["teachers"]["teacher"]["weights_key"] == "state_dict"
    _run(cfg, MMCls(4, 2, 2), {"teacher": MMCls(8, 6, 3)})


def test_mmrazor_1x_dkd_labels_and_rkd_parts():
    cfg = _quiet(_py("mmrazor_dkd_rkd_1x.py"))
    dkd, dw, aw = cfg["jobs"]
    assert dkd["student"] == ["head.fc"] and dkd["loss"] == {"type": "dkd", "T": 1, "beta": 0.5}  # gt_labels → ctx
    assert dw["loss"] == {"type": "rkd", "w_d": 1.0, "w_a": 0.0} and dw["weight"] == 25.0
    assert aw["loss"] == {"type": "rkd", "w_d": 0.0, "w_a": 1.0} and aw["weight"] == 50.0
    _run(cfg, MMCls(4, 2, 2), {"teacher": MMCls(8, 3, 2)})


@pytest.mark.parametrize("name, job_name, weight, student_name", [
    ("mmrazor_cwd_0x.py", "loss_cwd_logits", 5.0, "mmseg.EncoderDecoder/ResNetV1c18"),
    ("gml_cwd_psp.py", "loss_cwd", 10.0, "configs/pspnet/pspnet_r18-d8_512x512_8x1_40k_ade20k.py")])
def test_mmrazor_0x_components_and_gml_distill_cfg(name, job_name, weight, student_name):
    cfg = _quiet(_py(name))
    (job,) = cfg["jobs"]
    assert job == {"name": job_name, "teachers": ["teacher"], "student": ["decode_head.conv_seg"],
                   "teacher": ["decode_head.conv_seg"], "loss": {"type": "cwd", "tau": 1.0}, "weight": weight}
    assert cfg["student"]["name"] == student_name and cfg["teachers"]["teacher"]["weights"].endswith(".pth")
    _run(cfg, MMSeg(4), {"teacher": MMSeg(8)})


def test_fgd_feature_loss_and_masked_generative_mgd_are_told_apart():
    data = _py("gml_cwd_psp.py")
    data["distiller"]["distill_cfg"][0]["methods"] = [
        {"type": "FeatureLoss", "name": "loss_fgd", "temp": 0.5, "alpha_fgd": 0.001, "lambda_fgd": 5e-6},
        {"type": "MGDLoss", "name": "loss_mgd", "alpha_mgd": 2e-5}]
    with pytest.warns(TranslationWarning, match="'MGDLoss' has no kdforge equivalent"):
        fgd, mgd = translate(data)["jobs"]
    assert fgd["loss"] == {"type": "fgd", "temp": 0.5, "alpha": 0.001, "lambda_": 5e-6}
    assert mgd["loss"] == {"type": "MGDLoss", "alpha_mgd": 2e-5}  # not kdforge's (matching-guided) mgd


def test_gml_switched_off_methods_and_missing_mapping():
    data = _py("gml_cwd_psp.py")
    data["distiller"]["distill_cfg"][0]["methods"].append({"type": "DKDLoss", "name": "loss_dkd", "use_this": False})
    assert len(_quiet(data)["jobs"]) == 1
    data = _py("mmrazor_fitnets_1x.py")
    del data["model"]["distiller"]["loss_forward_mappings"]["loss_kl"]
    with pytest.raises(TranslationError, match="no loss_forward_mappings.loss_kl"):
        translate(data)


# ---------------------------------------------------------------- YAML output and the safe .py reader
@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir()))
def test_convert_file_roundtrips_to_a_valid_config(name):
    with pytest.warns(TranslationWarning):
        text = convert_file(DATA / name)
    assert text.startswith("# kdforge config translated from ")
    assert all(line.startswith("#") for line in text.splitlines()[:2])
    cfg = yaml.safe_load(text)
    assert load(DistillConfig, {k: v for k, v in cfg.items() if k in ("student", "teachers", "jobs")},
                context={"check_names": False}).jobs
    assert yaml.safe_load(to_yaml(cfg)) == cfg


def test_convert_file_errors(tmp_path):
    with pytest.raises(TranslationError, match="does not exist"):
        convert_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(\n")
    with pytest.raises(TranslationError, match="not valid Python"):
        convert_file(bad)


def test_python_reader_never_executes_code(tmp_path):
    marker = tmp_path / "ran"
    src = tmp_path / "evil.py"
    src.write_text(f"import os\nx = __import__('os').system('touch {marker}')\ny = open({str(marker)!r}, 'w')\n"
                   f"big = 2 ** 10 ** 9\nn = 3\nd = dict(a=n * 2, b=-n, c='p' + 'q', e=[1, (2, 3)], **dict(f=None))\n"
                   f"def f():\n    cfg = {{'k': open('x')}}\n")
    module, nested, unevaluated = read_pyconfig(src)
    assert not marker.exists()
    assert module["d"] == {"a": 6, "b": -3, "c": "pq", "e": [1, [2, 3]], "f": None}
    assert module["x"].startswith("<expr: __import__") and module["big"] == "<expr: 2 ** 10 ** 9>"
    assert {"k": "<expr: open('x')>"} in nested and "open('x')" in unevaluated
