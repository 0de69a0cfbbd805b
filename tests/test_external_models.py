"""torchvision:NAME, timm:NAME and "package.module:callable" model specs, and `kdforge inspect` learning the
input shape. Runs for real in `make test-extras` (.venv-extras has torchvision and timm); skips elsewhere."""
from __future__ import annotations

import pytest
import torch
import yaml

from kdforge import build_distiller
from kdforge.cli import main
from kdforge.engine.report import inspect_model
from kdforge.models import build_model, count_params
from user_data_helpers import write_image_folder

pytestmark = pytest.mark.extras


def _needs(lib: str):
    mod = pytest.importorskip(lib, exc_type=ImportError)
    return mod


def test_torchvision_spec_with_kwargs_and_taps():
    _needs("torchvision")
    m = build_model("torchvision:resnet18", num_classes=5)
    assert m.fc.out_features == 5 and count_params(m) == 11_179_077
    d = build_distiller({"student": {"name": "resnet8", "kwargs": {"num_classes": 5}},
                         "teachers": {"t0": {"name": "torchvision:resnet18", "kwargs": {"num_classes": 5}}},
                         "jobs": [{"loss": "kd", "student": "fc", "teacher": "fc"},
                                  {"loss": "at", "student": "layer3", "teacher": "layer1"}]})  # both 16x16 at 64 px
    out, loss = d(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and loss.isfinite() and loss.requires_grad
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet181'.*resnet18"):
        build_model("torchvision:resnet181")


def test_timm_spec_with_kwargs():
    _needs("timm")
    m = build_model("timm:resnet18", num_classes=3, in_chans=1)
    assert m.get_classifier().out_features == 3 and m.conv1.in_channels == 1
    vit = build_model("timm:vit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8, depth=2)
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match="unknown timm model 'resnet_18'"):
        build_model("timm:resnet_18")


def test_module_callable_spec_in_a_config():
    d = build_distiller({"student": {"name": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}},
                         "teachers": {"t0": {"name": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}}},
                         "jobs": [{"loss": "kd", "student": "", "teacher": ""}]})
    assert d.student.out_features == 3
    out, loss = d(torch.randn(5, 4))
    assert out.shape == (5, 3) and loss.isfinite()


def test_inspect_learns_input_shape_where_it_can():
    _needs("timm")
    _needs("torchvision")
    text = inspect_model("timm:resnet18", ["num_classes=3"], None, depth=1)
    assert "input (1, 3, 224, 224) (from the model's pretrained_cfg (timm))" in text
    text = inspect_model("torchvision:mobilenet_v3_small", [], None, depth=1)
    assert "input (1, 3, 224, 224) (from torchvision's weights metadata)" in text
    text = inspect_model("resnet8", ["in_channels=1"], None, depth=1)
    assert "input (1, 1, 32, 32) (assumed: the model does not state its input size; pass --input-shape" in text
    assert "input (1, 3, 64, 64) (--input-shape)" in inspect_model("timm:resnet18", [], "3,64,64", depth=1)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
def test_kdforge_train_distils_a_torchvision_teacher_on_an_image_folder(tmp_path, monkeypatch):
    _needs("torchvision")
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "imgs", per_class=4, val_per_class=2)
    cfg = {"name": "tv_kd", "device": "cpu", "model": {"name": "resnet8", "kwargs": {"num_classes": 2}},
           "teachers": {"t0": {"name": "torchvision:resnet18", "kwargs": {"num_classes": 2}}},
           "jobs": [{"loss": {"type": "kd", "T": 4}, "student": "", "teacher": "", "weight": 0.9}],
           "data": {"name": "image_folder", "root": "imgs", "batch_size": 4, "kwargs": {"size": 32, "decoder": "torchvision"}},
           "train": {"epochs": 1, "ce_weight": 0.1},
           "allow_untrained_teacher": True}  # a smoke test of the torchvision path, not of the teacher
    (tmp_path / "kd.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "kd.yaml", "--quiet"]) == 0
    assert (tmp_path / "runs" / "tv_kd" / "best.pt").is_file()
