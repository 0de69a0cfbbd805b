"""Model zoo, build_model, load_weights and profiling."""
from __future__ import annotations

import argparse
import importlib.util

import pytest
import torch
from torch import nn

from kdforge import MODELS, RegistryError
from kdforge.models import WeightsError, build_model, count_flops, count_macs, count_params, load_weights
from kdforge.models.build import WeightsFileNotFoundError

ZOO = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4", "resnet32x4",
    "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
    "mobilenetv2", "shufflenetv1", "shufflenetv2",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny batches: a second OpenMP thread only spins, and on a busy 2-core box that costs seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_zoo_registered():
    assert set(ZOO) <= set(MODELS.names())


@pytest.mark.parametrize("name", ZOO)
def test_zoo_forward_shapes(name):
    gray = build_model(name, in_channels=1)
    out = gray(torch.randn(2, 1, 28, 28))  # train mode, with autograd
    assert out.shape == (2, 10) and out.requires_grad  # default num_classes is 10
    rgb = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 7)
        assert rgb(torch.randn(1, 3, 16, 16)).shape == (1, 7)


@pytest.mark.parametrize(
    "name, millions, tol",
    [("resnet32x4", 7.43, 0.01), ("resnet8x4", 1.23, 0.01), ("wrn_40_2", 2.25, 0.02), ("resnet56", 0.86, 0.01),
     ("resnet110", 1.73, 0.02), ("vgg13", 9.46, 0.02), ("mobilenetv2", 0.81, 0.01), ("shufflenetv1", 0.95, 0.01),
     ("shufflenetv2", 1.35, 0.02)],
)
def test_param_counts_match_papers(name, millions, tol):
    # CIFAR-100 configuration, as in the CRD / DKD tables.
    assert count_params(build_model(name, num_classes=100)) / 1e6 == pytest.approx(millions, abs=tol)


def test_resnet32x4_macs_match_papers():
    macs = count_macs(build_model("resnet32x4", num_classes=100), torch.zeros(1, 3, 32, 32))
    assert macs / 1e9 == pytest.approx(1.08, abs=0.01)


def test_resnet_dotted_names_and_inplace_relu():
    m = build_model("resnet20")
    names = dict(m.named_modules())
    for path in ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc",
                 "layer3.1.bn2", "layer3.2.conv1", "layer2.0.downsample.0", "layer1.0.relu"]:
        assert path in names, path
    assert "layer4" not in names
    assert isinstance(names["relu"], nn.ReLU) and names["relu"].inplace
    assert isinstance(names["layer3.1.relu"], nn.ReLU) and names["layer3.1.relu"].inplace
    x4 = dict(build_model("resnet8x4").named_modules())
    assert x4["layer3.0.bn2"].num_features == 256 and "layer4" not in x4


def test_block_bn2_output_not_modified_after_forward():
    # The residual sum is out of place, so a tap on bn2 keeps the pre-sum value.
    m = build_model("resnet8")
    seen = {}
    m.layer3[0].bn2.register_forward_hook(lambda mod, i, o: seen.update(ref=o, copy=o.clone()))
    m(torch.randn(2, 3, 32, 32))
    assert torch.equal(seen["ref"], seen["copy"]) and (seen["ref"] < 0).any()


@pytest.mark.parametrize("name, paths", [
    ("wrn_16_2", ["conv1", "block2.layer.0.bn1", "block3.layer.1.conv2", "bn1", "fc"]),
    ("vgg8", ["block0", "block3.1", "pool4", "classifier"]),
    ("mobilenetv2", ["conv1", "blocks.6.0.conv.7", "conv2", "classifier.0"]),
    ("shufflenetv1", ["layer2.3.bn3", "linear"]),
    ("shufflenetv2", ["layer1.0.conv5", "layer3.3.bn3", "conv2", "bn2", "linear"]),
])
def test_reference_module_names(name, paths):
    names = dict(build_model(name).named_modules())
    assert all(p in names for p in paths), [p for p in paths if p not in names]


def test_invalid_depth():
    from kdforge.models.resnet import ResNet
    from kdforge.models.wrn import WideResNet
    with pytest.raises(ValueError, match="6n\\+2"):
        ResNet(10)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(12)


# ---------------------------------------------------------------------------------- profiling
def test_count_macs_conv_hand_computed():
    conv = nn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1, groups=2)
    # output 8×5×5 = 200 elements, each (4/2)·3·3 = 18 MACs; batch of 3
    assert count_macs(conv, torch.zeros(3, 4, 10, 10)) == 3 * 200 * 18
    assert count_params(conv) == 8 * 2 * 9 + 8


def test_count_macs_linear_transpose_and_model_state():
    lin = nn.Linear(5, 3)
    assert count_macs(lin, torch.zeros(4, 5)) == 4 * 3 * 5
    tconv = nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2, groups=2)
    assert count_macs(tconv, torch.zeros(1, 6, 3, 3)) == 6 * 9 * (4 // 2) * 4
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).train()
    assert count_macs(m, (torch.randn(2, 1, 4, 4),)) == 2 * (2 * 16 * 1) + 2 * 3 * 32
    assert m.training and m[1].num_batches_tracked.item() == 0  # mode restored, BN stats untouched
    assert not m[0]._forward_hooks
    lin.weight.requires_grad_(False)
    assert count_params(lin, trainable_only=True) == 3


class _AttnMatmul(nn.Module):
    """Layers other than Conv/Linear: a raw parameter matmul, nn.MultiheadAttention, einsum."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d, d))
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.w                                   # (B, L, d) @ (d, d)
        h, _ = self.attn(h, h, h)
        return torch.einsum("bld,bmd->blm", h, h)


@pytest.mark.extras
def test_count_macs_any_architecture_attention_and_matmul():
    b, seq, d = 2, 5, 16
    m = _AttnMatmul(d).train()
    matmul = b * seq * d * d
    attn = 3 * b * seq * d * d + 2 * b * seq * seq * d + b * seq * d * d   # q/k/v proj, QK^T and AV, out proj
    einsum = b * seq * seq * d
    assert count_macs(m, torch.randn(b, seq, d)) == matmul + attn + einsum
    assert m.training                                     # mode restored
    with torch.no_grad():                                 # MHA's fused no-grad fast path is still counted
        assert count_macs(m, torch.randn(b, seq, d)) == matmul + attn + einsum
    per = count_flops(m, torch.randn(b, seq, d), by_module=True)
    assert per["attn"] == 2 * attn and per[""] == 2 * (matmul + attn + einsum)


@pytest.mark.extras
def test_count_macs_hf_gpt2_conv1d():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=16, vocab_size=50)
    model = transformers.GPT2LMHeadModel(cfg)
    seq, d, v = 8, 32, 50
    per_layer = seq * d * 3 * d + seq * d * d + 2 * seq * 4 * d * d + 2 * seq * seq * d  # qkv, proj, mlp, attn
    assert count_macs(model, torch.zeros(1, seq, dtype=torch.long)) == 2 * per_layer + seq * d * v


# -------------------------------------------------------------------------------- build_model
def test_build_model_import_spec():
    m = build_model("kdforge.models.resnet:resnet8", num_classes=3)
    assert m.fc.out_features == 3
    lin = build_model("torch.nn:Linear", in_features=2, out_features=5)
    assert isinstance(lin, nn.Linear) and lin.out_features == 5


def test_build_model_errors():
    with pytest.raises(RegistryError, match="resnet32"):
        build_model("resnet33")
    with pytest.raises(RegistryError, match="cannot import module 'no_such_pkg.mod'"):
        build_model("no_such_pkg.mod:fn")
    with pytest.raises(RegistryError, match="has no attribute 'nope'"):
        build_model("torch.nn:nope")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        build_model("builtins:dict")
    with pytest.raises(TypeError, match="model resnet8 has no argument 'depth'; accepted: num_classes, in_channels"):
        build_model("resnet8", depth=3)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision installed")
def test_torchvision_missing_says_how_to_install():
    with pytest.raises(ImportError, match="pip install torchvision"):
        build_model("torchvision:resnet18")


# ------------------------------------------------------------------------------- load_weights
def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_weights_round_trip_and_checkpoint_layouts(tmp_path):
    src = build_model("resnet8")
    fresh = build_model("resnet8")
    assert not _same(src, fresh)
    layouts = {
        "raw.pt": src.state_dict(),
        "ckpt.pt": {"model": src.state_dict(), "epoch": 3, "best_acc": 91.5},
        "sd.pth": {"state_dict": src.state_dict(), "optimizer": {"lr": 0.1}},
        "kd.pt": {"student": src.state_dict()},
        "ddp.pt": {"model": {"module." + k: v for k, v in src.state_dict().items()}},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        assert _same(load_weights(build_model("resnet8"), tmp_path / name), src), name
    torch.save({"ema": src.state_dict(), "model": fresh.state_dict()}, tmp_path / "ema.pt")
    assert _same(load_weights(build_model("resnet8"), str(tmp_path / "ema.pt"), key="ema"), src)


def test_load_weights_file_errors(tmp_path):
    model = build_model("resnet8")
    with pytest.raises(WeightsFileNotFoundError, match="does not exist") as e:
        load_weights(model, tmp_path / "missing.pt")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, WeightsError)
    (tmp_path / "notes.txt").write_text("hello, not weights")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        load_weights(model, tmp_path / "notes.txt")
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pt")
    with pytest.raises(WeightsError, match="Python objects"):
        load_weights(model, tmp_path / "pickled.pt")
    torch.save({"epoch": 1, "acc": 0.5}, tmp_path / "nostate.pt")
    with pytest.raises(WeightsError, match="'epoch', 'acc'"):
        load_weights(model, tmp_path / "nostate.pt")
    with pytest.raises(WeightsError, match="no entry 'teacher'"):
        load_weights(model, tmp_path / "nostate.pt", key="teacher")


def test_load_weights_key_and_shape_errors(tmp_path):
    src = build_model("resnet8")
    sd = src.state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("layer3")}
    torch.save(partial, tmp_path / "partial.pt")
    n_missing = len(sd) - len(partial)
    with pytest.raises(WeightsError, match=f"{n_missing} missing keys: layer3.0.conv1.weight.*more") as e:
        load_weights(build_model("resnet8"), tmp_path / "partial.pt")
    assert "strict=False" in str(e.value)
    loose = load_weights(build_model("resnet8"), tmp_path / "partial.pt", strict=False)
    assert torch.equal(loose.conv1.weight, src.conv1.weight)

    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match="1 unexpected keys: extra.weight"):
        load_weights(build_model("resnet8"), tmp_path / "extra.pt")

    torch.save(build_model("resnet8", num_classes=100).state_dict(), tmp_path / "c100.pt")
    msg = r"2 shape mismatches: fc.weight \(file \(100, 64\) vs model \(10, 64\)\), fc.bias"
    with pytest.raises(WeightsError, match=msg):
        load_weights(build_model("resnet8"), tmp_path / "c100.pt")
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_weights(build_model("resnet8"), tmp_path / "c100.pt", strict=False)


def test_input_shape_from_the_model_or_assumed():
    from kdforge.engine.report import inspect_model
    from kdforge.models.input_shape import default_input_shape

    class WithCfg(nn.Module):  # timm's convention, on any module
        pretrained_cfg = {"input_size": (3, 48, 40)}

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 48 * 40, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    assert default_input_shape("mypkg:net", WithCfg()) == ((3, 48, 40), "the model's default_cfg")
    assert default_input_shape("resnet8", build_model("resnet8"), {"in_channels": 1}) == ((1, 32, 32), None)
    assert "input (1, 1, 32, 32) (assumed: the model does not state its input size; pass --input-shape" in \
        inspect_model("resnet8", ["in_channels=1"], None, depth=0)
