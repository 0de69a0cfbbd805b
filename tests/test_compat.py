"""mslim-style dicts with live modules: Distiller(config) / build_distiller(config), get_learnable_params()."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdforge import Distiller, build_distiller
from kdforge.distiller import DistillerError
from kdforge.models import build_model


def _mslim_kd(**extra):
    """The dict of mslim's CIFAR-100 vanilla-KD example (tests/data/translate/mslim_train_kd.py), live models."""
    return {"student_model": build_model("resnet8", num_classes=10), "teacher_model": build_model("resnet20", num_classes=10),
            "student_distill_layer": ["fc"], "teacher_distill_layer": ["fc"],
            "loss": [dict(type="vanilla_kd", T=4)], "weights": [0.2], "student_out_layer": ["fc"],
            "device": torch.device("cpu"), **extra}


def test_mslim_dict_gives_a_working_distiller():
    cfg = _mslim_kd()
    d = Distiller(cfg)
    assert d.student is cfg["student_model"] and d.teachers["teacher"] is cfg["teacher_model"]
    assert [j.spec.loss for j in d.jobs] == [{"type": "kd", "T": 4}] and d.jobs[0].spec.weight == pytest.approx(0.2)
    params = d.get_learnable_params()
    assert [id(p) for p in params] == [id(p) for p in d.learnable_parameters()]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out, kd = d(x, labels=y)
    (F.cross_entropy(out, y) + kd).backward()
    opt.step()
    assert kd.item() > 0 and all(p.grad is None for p in cfg["teacher_model"].parameters())


def test_build_distiller_accepts_the_same_dict_and_per_layer_losses():
    s, t = build_model("resnet8", num_classes=10), build_model("resnet20", num_classes=10)
    d = build_distiller({"student_model": s, "teacher_model": t,
                         "student_distill_layer": ["layer1", "layer2"], "teacher_distill_layer": ["layer1", "layer2"],
                         "loss": [dict(type="at"), dict(type="at")], "weights": [1.0, 2.0]})
    assert [(j.spec.student, j.spec.weight) for j in d.jobs] == [(["layer1"], 1.0), (["layer2"], 2.0)]
    _, loss = d(torch.randn(2, 3, 32, 32))
    assert loss.isfinite()
    with pytest.raises(DistillerError, match="do not also pass"):
        build_distiller({"student_model": s, "teacher_model": t, "student_distill_layer": ["fc"],
                         "teacher_distill_layer": ["fc"], "loss": ["kd"]}, student=s)


def test_united_perception_mimic_block_next_to_live_models():
    s, t = build_model("resnet8", num_classes=10), build_model("resnet20", num_classes=10)
    d = Distiller({"student_model": s, "teacher_model": t,
                   "mimic": {"mimic_type": "kl", "loss_weight": 1.0,
                             "teacher": {"mimic_name": ["fc"]}, "student": {"mimic_name": ["fc"]}}})
    assert len(d.jobs) == 1 and list(d.teachers.values()) == [t]
    _, loss = d(torch.randn(2, 3, 32, 32))
    assert loss.isfinite()


def test_dicts_that_cannot_work_say_the_fix():
    s, t = build_model("resnet8"), build_model("resnet20")
    with pytest.raises(DistillerError, match="no teacher nn.Module: put it under 'teacher_model'"):
        Distiller({"student_model": s, "student_distill_layer": ["fc"]})
    with pytest.raises(DistillerError, match=r"(?s)cannot read this config dict.*Distiller\(student, \{'t0': teacher\}"):
        Distiller({"student_model": s, "teacher_model": t, "layers": ["fc"]})
    with pytest.raises(DistillerError, match="use kdforge.build_distiller"):
        Distiller({"student": {"name": "resnet8"}, "jobs": []})
    with pytest.raises(DistillerError, match="2 teacher module"):
        Distiller({"student_model": s, "teacher_model": [t, build_model("resnet20")],
                   "student_distill_layer": ["fc"], "teacher_distill_layer": ["fc"], "loss": ["kd"]})
    with pytest.raises(DistillerError, match="do not also pass teachers/jobs"):
        Distiller(_mslim_kd(), {"t0": t})
