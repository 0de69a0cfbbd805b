"""at, ab, cwd, nst, ofd: values against hand numbers / loop references, gradients, shape errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from kdforge.losses.base import ShapeMismatchError
from kdforge.losses.ofd import ofd_margin
from kdforge.registry import LOSSES


def _maps(cs: int = 3, ct: int = 3, hw: int = 4, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, cs, hw, hw, dtype=torch.float64), torch.randn(n, ct, hw, hw, dtype=torch.float64)


# ----------------------------------------------------------------------------- at
def test_at_hand_numbers() -> None:
    s = torch.tensor([[[[1.0, 0.0]]]])                      # Q_s = [1, 0]
    t = torch.tensor([[[[0.0, 1.0]], [[0.0, -1.0]]]])       # Q_t = mean_c t² = [0, 1]
    # normalised maps [1, 0] and [0, 1]: mean of squared differences = (1 + 1) / 2 = 1
    assert LOSSES.build("at")(s, t).item() == pytest.approx(1000.0)


def test_at_matches_loop_reference() -> None:
    s, t = _maps(cs=3, ct=5)

    def att(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        out = np.zeros((n, h * w))
        for i in range(n):
            q = np.array([sum(x[i, k, a, b] ** 2 for k in range(c)) / c for a in range(h) for b in range(w)])
            out[i] = q / math.sqrt((q ** 2).sum())
        return out

    ref = 1000.0 * ((att(s.numpy()) - att(t.numpy())) ** 2).mean()
    assert LOSSES.build("at")(s, t).item() == pytest.approx(ref, rel=1e-9)


# ----------------------------------------------------------------------------- ab
def test_ab_hand_numbers() -> None:
    s = torch.tensor([0.5, -2.0, 2.0, 0.5]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    t = torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    # per sample: (0.5+1)² [t<=0, s>-1] + 0 [s<=-1] + 0 [s>1] + (0.5-1)² [t>0, s<=1] = 2.5; sum 5 / N=2
    assert LOSSES.build("ab")(s, t).item() == pytest.approx(2.5)
    assert LOSSES.build("ab", margin=2.0)(s, t).item() == pytest.approx((2.5 ** 2 + 1.5 ** 2) * 2 / 2)


# ----------------------------------------------------------------------------- cwd
def test_cwd_matches_loop_reference() -> None:
    s, t = _maps(cs=3, ct=3)
    tau = 4.0
    total = 0.0
    n, c = s.shape[:2]
    for i in range(n):
        for k in range(c):
            ps = np.exp(s[i, k].numpy().ravel() / tau)
            pt = np.exp(t[i, k].numpy().ravel() / tau)
            ps, pt = ps / ps.sum(), pt / pt.sum()
            total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    assert LOSSES.build("cwd")(s, t).item() == pytest.approx(total * tau * tau / (n * c), rel=1e-9)


# ----------------------------------------------------------------------------- nst
def test_nst_matches_loop_reference() -> None:
    s, t = _maps(cs=2, ct=3, hw=3)

    def unit(x: np.ndarray) -> np.ndarray:
        v = x.reshape(x.shape[0], -1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    ref = 0.0
    for i in range(s.shape[0]):
        fs, ft = unit(s[i].numpy()), unit(t[i].numpy())
        k = lambda a, b: float(a @ b) ** 2  # noqa: E731  polynomial kernel d=2, c=0
        ref += (sum(k(a, b) for a in ft for b in ft) / len(ft) ** 2
                + sum(k(a, b) for a in fs for b in fs) / len(fs) ** 2
                - 2 * sum(k(a, b) for a in fs for b in ft) / (len(fs) * len(ft)))
    assert LOSSES.build("nst")(s, t).item() == pytest.approx(ref / s.shape[0], rel=1e-9)
    assert LOSSES.build("nst")(t, t.clone()).item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------- ofd
def test_ofd_margin_matches_scipy_formula() -> None:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.1]))
        bn.bias.copy_(torch.tensor([0.0, 0.3, -1.0, 1.0]))   # last: cdf(-10) < 0.001 → -3s
    ref = []
    for s, m in zip([1.0, 0.5, 2.0, 0.1], [0.0, 0.3, -1.0, 1.0]):
        cdf = norm.cdf(-m / s)
        ref.append(-s * math.exp(-(m / s) ** 2 / 2) / math.sqrt(2 * math.pi) / cdf + m if cdf > 0.001 else -3 * s)
    assert ofd_margin(bn).tolist() == pytest.approx(ref, rel=1e-6)
    assert ref[0] == pytest.approx(-math.sqrt(2 / math.pi))   # E[x | x < 0] of N(0, 1)


def test_ofd_matches_loop_reference() -> None:
    s, t = _maps(cs=2, ct=2, hw=2)
    margin = torch.tensor([-0.5, -0.2], dtype=torch.float64)
    ref = 0.0
    for i, k, a, b in np.ndindex(*s.shape):
        tgt = max(t[i, k, a, b].item(), margin[k].item())
        sv = s[i, k, a, b].item()
        if sv > tgt or tgt > 0:
            ref += (sv - tgt) ** 2
    loss = LOSSES.build("ofd", margin=margin)(s, t)
    assert loss.item() == pytest.approx(ref / s.shape[0], rel=1e-6)


def test_ofd_setup_reads_teacher_bn() -> None:
    teacher = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
    with torch.no_grad():
        teacher[1].bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    direct = LOSSES.build("ofd")
    direct.setup(student=nn.Identity(), teachers=[teacher], student_taps=["x"], teacher_taps=["1"])
    assert direct.margin0.shape == (1, 3, 1, 1)
    assert direct.margin0.flatten().tolist() == pytest.approx(ofd_margin(teacher[1]).tolist())
    assert "margin0" in direct.state_dict()
    named = LOSSES.build("ofd", teacher_bn="1")
    named.setup(student=nn.Identity(), teachers=[teacher], student_taps=["x"], teacher_taps=["2"])
    assert torch.equal(named.margin0, direct.margin0)
    with pytest.raises(ValueError, match="ofd: teacher tap '2' is ReLU, not a BatchNorm.*teacher_bn="):
        LOSSES.build("ofd").setup(student=nn.Identity(), teachers=[teacher], student_taps=["x"], teacher_taps=["2"])
    with pytest.raises(ValueError, match="ofd has no margin"):
        LOSSES.build("ofd")(*_maps())


# ----------------------------------------------------------------------------- common
SAME = {"ab": {}, "cwd": {}, "ofd": {"margin": torch.full((3,), -0.3)}}
CROSS = {"at": {}, "nst": {}}


@pytest.mark.parametrize("name,kwargs", [*SAME.items(), *CROSS.items()])
def test_gradient_reaches_student_only(name: str, kwargs: dict) -> None:
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3 if name in SAME else 5, 4, 4)
    loss = LOSSES.build(name, **kwargs)(s, t)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("name,kwargs", SAME.items())
def test_same_shape_losses_name_shapes_and_connector(name: str, kwargs: dict) -> None:
    with pytest.raises(ShapeMismatchError, match=rf"{name}.*\(2, 2, 4, 4\).*\(2, 3, 4, 4\).*conv1x1"):
        LOSSES.build(name, **kwargs)(torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("name", CROSS)
def test_cross_channel_losses_need_equal_spatial_size(name: str) -> None:
    loss = LOSSES.build(name)
    assert loss.same_shape is False
    with pytest.raises(ShapeMismatchError, match=rf"{name}: spatial sizes differ.*\(2, 3, 4, 4\).*\(2, 5, 8, 8\).*resize"):
        loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 8, 8))
    with pytest.raises(ShapeMismatchError, match=rf"{name}: student feature must be 4-D"):
        loss(torch.randn(2, 3), torch.randn(2, 3))
