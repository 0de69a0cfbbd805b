import pytest
import torch
import yaml

from kdforge import ConfigError, Distiller, build_distiller, load_config
from kdforge.models import WeightsError
from toy_models import TinyResNet

X = torch.randn(4, 1, 16, 16)


@pytest.fixture()
def teacher_weights(tmp_path):
    torch.manual_seed(1)
    a = tmp_path / "a.pt"
    torch.save(TinyResNet(8).state_dict(), a)
    b = tmp_path / "b.pt"
    torch.save({"model": TinyResNet(6).state_dict()}, b)
    return a, b


def seeds_style_cfg(a, b):
    """The seeds' vocabulary: mimic jobs, loss_weight, warm_up_iters, teacher weight paths, loss kwargs."""
    return {
        "student": {"type": "toy_models:tiny_resnet", "kwargs": {"width": 4}},
        "teachers": {
            "teacher0": {"type": "toy_models:tiny_resnet", "kwargs": {"width": 8}, "teacher_weight": str(a)},
            "teacher1": {"type": "toy_models:tiny_resnet", "kwargs": {"width": 6}, "weights": str(b)},
        },
        "mimic_jobs": [
            {"mimic_name": "logits", "teacher_names": ["teacher0", "teacher1"], "student_module": "fc",
             "teacher_module": "fc", "loss": {"type": "kd", "kwargs": {"T": 2}}, "loss_weight": 0.5},
            {"mimic_name": "feat", "teacher_names": "teacher1", "student_module": ["layer3"],
             "teacher_module": ["layer3"], "connector": "conv1x1_bn", "loss": "fitnet",
             "loss_weight": 10, "warm_up_iters": 3},
        ],
    }


def test_build_from_dict_with_seeds_vocabulary(teacher_weights):
    a, b = teacher_weights
    d = build_distiller(seeds_style_cfg(a, b))
    assert isinstance(d, Distiller)
    assert [j.name for j in d.jobs] == ["logits", "feat"]
    assert d.jobs[0].teacher_names == ["teacher0", "teacher1"] and d.jobs[0].loss.T == 2
    assert d.jobs[1].spec.warmup_iters == 3 and d.jobs[1].spec.weight == 10
    ref = TinyResNet(8)
    ref.load_state_dict(torch.load(a, weights_only=True))
    assert torch.equal(d.teachers["teacher0"].fc.weight, ref.fc.weight)
    _, loss = d(X)
    assert loss > 0 and set(d.losses) == {"logits", "feat"}


def test_build_from_yaml_file_and_overrides(teacher_weights, tmp_path):
    a, b = teacher_weights
    p = tmp_path / "kd.yaml"
    p.write_text(yaml.safe_dump(seeds_style_cfg(a, b)))
    d = build_distiller(p, overrides=["mimic_jobs.1.loss_weight=3"])
    assert d.jobs[1].spec.weight == 3
    cfg = load_config(p)
    assert cfg.teachers["teacher0"].weights == str(a)


def test_models_given_in_python_replace_the_config_ones(teacher_weights):
    a, b = teacher_weights
    s = TinyResNet(4)
    d = build_distiller(seeds_style_cfg(a, b), student=s)
    assert d.student is s


def test_config_errors_name_the_field(teacher_weights):
    a, b = teacher_weights
    cfg = seeds_style_cfg(a, b)
    cfg["mimic_jobs"][0]["loss_wieght"] = 1
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.loss_wieght: Extra inputs are not permitted"):
        build_distiller(cfg)
    cfg = seeds_style_cfg(a, b)
    cfg["mimic_jobs"][0]["combine"] = "median"
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.combine: Input should be 'mean' or 'confidence'"):
        build_distiller(cfg)
    with pytest.raises(ConfigError, match="does not exist"):
        build_distiller(tmp := a.parent / "missing.yaml")  # noqa: F841


def test_missing_or_incompatible_teacher_weights(teacher_weights, tmp_path):
    a, b = teacher_weights
    cfg = seeds_style_cfg(a, b)
    cfg["teachers"]["teacher0"]["teacher_weight"] = str(tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="nope.pt"):
        build_distiller(cfg)
    cfg = seeds_style_cfg(b, b)  # width-6 weights into a width-8 teacher
    with pytest.raises(WeightsError, match="shape"):
        build_distiller(cfg)
