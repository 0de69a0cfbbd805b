import math

import pytest
import torch
from torch import nn

from kdforge import CONNECTORS, LOSSES, Connector, RegistryError, ShapeMismatchError, build_connector
from kdforge.registry import Registry


def _softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def test_kd_matches_hand_computation_on_2x3():
    s = [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]
    t = [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]
    T = 2.0
    total = 0.0
    for rs, rt in zip(s, t):
        ps, pt = _softmax(rs, T), _softmax(rt, T)
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    expected = total / 2 * T * T
    got = LOSSES.build("kd", T=T)(torch.tensor(s), torch.tensor(t))
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    # by hand: row KLs at T=2 are 0.51846 and 0.14824 → (0.66670 / 2) · T² = 1.3334
    assert math.isclose(got.item(), 1.3334, abs_tol=2e-4)


def test_kd_gradient_and_errors():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    LOSSES.build("kd")(s, t).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # softmax gradients sum to zero per row
    assert torch.allclose(s.grad.sum(1), torch.zeros(4), atol=1e-6)
    with pytest.raises(ShapeMismatchError, match=r"kd: student logits must be 2-D"):
        LOSSES.build("kd")(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ShapeMismatchError, match=r"student \(2, 3\) vs teacher \(2, 4\)"):
        LOSSES.build("kd")(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="T must be > 0"):
        LOSSES.build("kd", T=0)


def test_kd_is_zero_for_identical_logits():
    x = torch.randn(3, 7)
    assert LOSSES.build("kd")(x, x.clone()).abs().item() < 1e-6


def test_fitnet_is_elementwise_mse():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    v = LOSSES.build("fitnet")(s, t)
    assert math.isclose(v.item(), (0 + 4 + 9 + 16) / 4)
    v.backward()
    assert torch.allclose(s.grad, 2 * (s.detach() - t) / 4)


@pytest.mark.parametrize("name,s_shape,t_shape", [
    ("identity", (2, 4, 5, 5), (2, 4, 5, 5)),
    ("conv1x1", (2, 4, 5, 5), (2, 6, 5, 5)),
    ("conv1x1_bn", (2, 4, 5, 5), (2, 6, 5, 5)),
    ("conv3x3_bn", (2, 4, 5, 5), (2, 3, 5, 5)),
    ("linear", (2, 4, 2, 2), (2, 9)),
    ("mlp", (3, 8), (3, 5)),
])
def test_connectors_infer_shapes(name, s_shape, t_shape):
    conn = build_connector(name)
    params_before = list(conn.parameters())  # exist before the first call (an optimiser can hold them)
    x = torch.randn(*s_shape, requires_grad=True)
    conn.bind_once(s_shape, t_shape)
    y = conn(x)
    assert tuple(y.shape) == t_shape
    y.sum().backward()
    assert x.grad is not None
    assert [id(p) for p in conn.parameters()] == [id(p) for p in params_before]


def test_resize_connector_and_optimizer_created_before_first_call():
    conn = build_connector({"type": "conv1x1_bn", "resize": True})
    opt = torch.optim.SGD(conn.parameters(), lr=0.1)
    conn.bind_once((2, 4, 8, 8), (2, 6, 4, 4))
    y = conn(torch.randn(2, 4, 8, 8))
    assert y.shape == (2, 6, 4, 4)
    w0 = conn.net[0].weight.detach().clone()
    y.pow(2).mean().backward()
    opt.step()
    assert not torch.equal(w0, conn.net[0].weight)


def test_connector_errors():
    with pytest.raises(ValueError, match="4-D feature maps.*use 'linear'"):
        build_connector("conv1x1").bind_once((2, 4), (2, 6))
    with pytest.raises(ValueError, match="needs a 'type' key"):
        build_connector({"resize": True})
    with pytest.raises(TypeError, match="connector conv1x1 has no argument 'chanels'; did you mean 'out_channels'"):
        build_connector({"type": "conv1x1", "chanels": 3})


def test_registry_did_you_mean_and_duplicates():
    reg = Registry("widget")
    reg.register("alpha")(dict)
    with pytest.raises(RegistryError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\?.*Registered widgets: alpha"):
        reg.get("alpah")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha")(list)
    reg.register("alpha", override=True)(list)
    assert reg.get("alpha") is list and "alpha" in reg and len(reg) == 1


def test_user_registered_loss_and_connector_work_in_a_distiller():
    from kdforge import Distiller, DistillJob
    from toy_models import TinyResNet

    @LOSSES.register("test_l1", override=True)
    class L1(nn.Module):
        def forward(self, student, teacher, **ctx):
            return (student - teacher).abs().mean()

    @CONNECTORS.register("test_conv3x3", override=True)
    class Conv3x3(Connector):
        def __init__(self):
            super().__init__()
            self.conv = nn.LazyConv2d(0, 3, padding=1)

        def bind(self, student_shape, teacher_shape):
            self.conv.out_channels = teacher_shape[1]

        def forward(self, x):
            return self.conv(x)

    d = Distiller(TinyResNet(4), TinyResNet(8), [DistillJob(loss="test_l1", student="layer2", teacher="layer2",
                                                            connector="test_conv3x3")])
    _, v = d(torch.randn(2, 1, 16, 16))
    assert v > 0 and d.jobs[0].connectors[0].conv.weight.shape == (16, 8, 3, 3)
