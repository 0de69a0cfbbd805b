import gc

import pytest
import torch
from torch import nn

from kdforge.capture import TapError, Tapper, TapSpec, emit
from toy_models import TinyResNet, YoloLike


def test_parse_specs():
    assert TapSpec.parse("layer3") == TapSpec("layer3", "layer3", "output")
    assert TapSpec.parse("fc:input").kind == "input"
    assert TapSpec.parse("backbone.forward_features:return").path == "backbone.forward_features"
    assert TapSpec.parse("@embed") == TapSpec("@embed", "embed", "emit")
    with pytest.raises(TapError, match="unknown kind 'inptu'"):
        TapSpec.parse("fc:inptu")


def test_output_input_method_and_emit_values():
    m = TinyResNet().eval()
    x = torch.randn(2, 1, 16, 16)
    tapper = Tapper(m, ["layer3", "fc:input", "forward_features:return", "@embed", ""])
    with tapper.record() as rec:
        out = m(x)
    feats = m.forward_features(x)
    assert torch.allclose(rec["layer3"], feats)
    assert torch.allclose(rec["forward_features:return"], feats)
    pooled = feats.mean((2, 3))
    assert torch.allclose(rec["@embed"], pooled * 2)
    assert torch.allclose(rec["fc:input"], pooled * 2)
    assert torch.equal(rec[""], out)
    tapper.close()
    assert "forward_features" not in m.__dict__  # method wrapper removed


def test_dotted_paths_with_integer_indices():
    m = TinyResNet().eval()
    x = torch.randn(2, 1, 16, 16)
    with Tapper(m, ["layer3.1.bn2"]) as tapper, tapper.record() as rec:
        m(x)
        assert rec["layer3.1.bn2"].shape == (2, 16, 4, 4)
    y = YoloLike()
    with Tapper(y, ["model.77"]) as tapper, tapper.record() as rec:
        y(torch.randn(1, 2, 3, 3))
        assert rec["model.77"].shape == (1, 2, 3, 3)


def test_pre_relu_survives_inplace_relu():
    """BN output followed by nn.ReLU(inplace=True): the tap must keep the pre-activation values."""
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)).eval()
    tapper = Tapper(m, ["1"])
    for _ in range(3):  # first call probes, later calls must still be right
        x = torch.randn(2, 1, 8, 8)
        with tapper.record() as rec:
            m(x)
        expected = m[1](m[0](x))
        got = rec["1"]
        assert (got < 0).any(), "pre-ReLU tensor must contain negatives"
        assert torch.allclose(got, expected)
    assert tapper._slots["1"].clone  # kept cloning where the model writes in place


def test_tap_without_inplace_is_zero_copy_after_probe():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    tapper = Tapper(m, ["1"])
    for _ in range(2):
        with tapper.record() as rec:
            m(torch.randn(1, 1, 5, 5))
        rec["1"]
    assert not tapper._slots["1"].clone


def test_student_tap_keeps_grad():
    m = TinyResNet()
    tapper = Tapper(m, ["layer2.0.bn1"])
    with tapper.record() as rec:
        m(torch.randn(2, 1, 16, 16))
    f = rec["layer2.0.bn1"]
    assert f.requires_grad
    f.sum().backward()
    assert m.layer2[0].conv1.weight.grad is not None


def test_unknown_path_lists_closest_names():
    m = TinyResNet()
    with pytest.raises(TapError, match=r"no module 'layer3\.1\.bn3'.*'layer3\.1\.bn2'"):
        Tapper(m, ["layer3.1.bn3"])
    with pytest.raises(TapError, match="no method 'forward_featurez'"):
        Tapper(m, ["forward_featurez:return"])


def test_module_not_called_is_an_error():
    m = TinyResNet()
    m.unused = nn.Linear(2, 2)
    tapper = Tapper(m, ["unused"])
    with tapper.record() as rec:
        m(torch.randn(1, 1, 16, 16))
    with pytest.raises(TapError, match="recorded nothing"):
        rec["unused"]


def test_hooks_removed_by_close_context_and_gc():
    m = TinyResNet()

    def n_hooks() -> int:
        return sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.modules())

    t = Tapper(m, ["layer1", "fc:input"])
    assert n_hooks() == 2
    t.close()
    assert n_hooks() == 0
    with Tapper(m, ["layer1"]):
        assert n_hooks() == 1
    assert n_hooks() == 0
    Tapper(m, ["layer1", "layer2"])  # dropped at once
    gc.collect()
    assert n_hooks() == 0


def test_emit_is_noop_without_listener():
    x = torch.ones(2)
    assert emit("anything", x) is x


def test_not_recording_outside_block():
    m = TinyResNet().eval()
    tapper = Tapper(m, ["layer1"])
    m(torch.randn(1, 1, 16, 16))
    assert tapper._slots["layer1"].value is None
