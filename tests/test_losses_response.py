"""dkd, dist, logit_std: values against independent numpy/loop references, gradients, shape errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdforge.losses.base import ShapeMismatchError
from kdforge.registry import LOSSES


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0))


def _logits(n: int = 4, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, c, dtype=torch.float64) * 2, torch.randn(n, c, dtype=torch.float64) * 2


# ----------------------------------------------------------------------------- dkd
def _dkd_reference(s: np.ndarray, t: np.ndarray, y: np.ndarray, alpha: float, beta: float, T: float) -> float:
    total = 0.0
    for n in range(s.shape[0]):
        ps, pt = _softmax(s[n] / T), _softmax(t[n] / T)
        g = y[n]
        bs = np.array([ps[g], 1 - ps[g]])
        bt = np.array([pt[g], 1 - pt[g]])
        others = [c for c in range(s.shape[1]) if c != g]
        qs = np.array([ps[c] for c in others]) / (1 - ps[g])
        qt = np.array([pt[c] for c in others]) / (1 - pt[g])
        total += alpha * _kl(bt, bs) + beta * _kl(qt, qs)
    return total / s.shape[0] * T * T


def test_dkd_matches_loop_reference() -> None:
    s, t = _logits()
    y = torch.tensor([0, 2, 4, 1])
    loss = LOSSES.build("dkd")(s, t, labels=y)
    ref = _dkd_reference(s.numpy(), t.numpy(), y.numpy(), 1.0, 8.0, 4.0)
    assert loss.item() == pytest.approx(ref, rel=1e-9)


def test_dkd_decomposes_kd() -> None:
    """Paper eq. (5): KD = TCKD + (1 - p^t_gt) NCKD, per sample."""
    s, t = _logits(1, 6)
    y = torch.tensor([3])
    tckd = LOSSES.build("dkd", alpha=1.0, beta=0.0, T=2.0)(s, t, labels=y)
    nckd = LOSSES.build("dkd", alpha=0.0, beta=1.0, T=2.0)(s, t, labels=y)
    kd = LOSSES.build("kd", T=2.0)(s, t)
    p_gt = torch.softmax(t / 2.0, 1)[0, 3]
    assert kd.item() == pytest.approx((tckd + (1 - p_gt) * nckd).item(), rel=1e-9)


def test_dkd_two_classes_is_kd() -> None:
    s, t = _logits(3, 2)
    y = torch.tensor([0, 1, 1])
    assert LOSSES.build("dkd")(s, t, labels=y).item() == pytest.approx(LOSSES.build("kd")(s, t).item(), rel=1e-9)


def test_dkd_warmup_is_the_jobs() -> None:
    """DKD's official 20-epoch ramp is the job's warm-up (one warm-up mechanism), not a loss argument."""
    from kdforge import Distiller, DistillJob

    with pytest.raises(TypeError, match="dkd has no argument 'warmup_steps'"):
        LOSSES.build("dkd", warmup_steps=10)
    s, t = torch.nn.Linear(4, 5), torch.nn.Linear(4, 5)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    d = Distiller(s, t, [DistillJob(loss="dkd", student="", teacher="", weight=2.0, warmup_iters=10, name="dkd")])
    full = LOSSES.build("dkd")(s(x), t(x), labels=y)
    for step, factor in ((0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0)):
        d.step.fill_(step)
        _, total = d(x, labels=y)
        assert d.raw_losses["dkd"].item() == pytest.approx(full.item(), rel=1e-6)
        assert d.losses["dkd"].item() == pytest.approx(2.0 * factor * full.item(), rel=1e-6)
        assert total.item() == pytest.approx(d.losses["dkd"].item(), rel=1e-6)


def test_dkd_needs_labels() -> None:
    s, t = _logits()
    with pytest.raises(ValueError, match="dkd needs the ground-truth labels"):
        LOSSES.build("dkd")(s, t)
    with pytest.raises(ShapeMismatchError, match="dkd: labels must be a 1-D tensor of 4"):
        LOSSES.build("dkd")(s, t, labels=torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- dist
def _dist_reference(s: np.ndarray, t: np.ndarray, beta: float, gamma: float, tau: float) -> float:
    ys = np.stack([_softmax(r / tau) for r in s])
    yt = np.stack([_softmax(r / tau) for r in t])
    inter = 1 - np.mean([np.corrcoef(ys[n], yt[n])[0, 1] for n in range(ys.shape[0])])
    intra = 1 - np.mean([np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(ys.shape[1])])
    return tau * tau * (beta * inter + gamma * intra)


@pytest.mark.parametrize("kwargs", [{}, {"beta": 2.0, "gamma": 0.5, "tau": 4.0}])
def test_dist_matches_corrcoef(kwargs: dict) -> None:
    s, t = _logits(6, 5)
    loss = LOSSES.build("dist", **kwargs)(s, t)
    ref = _dist_reference(s.numpy(), t.numpy(), kwargs.get("beta", 1.0), kwargs.get("gamma", 1.0),
                          kwargs.get("tau", 1.0))
    assert loss.item() == pytest.approx(ref, rel=1e-6)


def test_dist_zero_for_identical_logits() -> None:
    s, _ = _logits()
    assert LOSSES.build("dist")(s, s.clone()).item() == pytest.approx(0.0, abs=1e-5)  # eps=1e-8 in rho


# ----------------------------------------------------------------------------- logit_std
def _logit_std_reference(s: np.ndarray, t: np.ndarray, T: float) -> float:
    total = 0.0
    for n in range(s.shape[0]):
        zs = (s[n] - s[n].mean()) / (s[n].std(ddof=1) + 1e-7)
        zt = (t[n] - t[n].mean()) / (t[n].std(ddof=1) + 1e-7)
        total += _kl(_softmax(zt / T), _softmax(zs / T))
    return total / s.shape[0] * T * T


def test_logit_std_matches_loop_reference() -> None:
    s, t = _logits()
    assert LOSSES.build("logit_std")(s, t).item() == pytest.approx(_logit_std_reference(s.numpy(), t.numpy(), 2.0),
                                                                    rel=1e-9)


def test_logit_std_ignores_scale_and_shift() -> None:
    s, t = _logits()
    loss = LOSSES.build("logit_std")
    assert loss(3.0 * s + 7.0, t).item() == pytest.approx(loss(s, t).item(), rel=1e-6)
    assert loss(t * 0.25 - 1.0, t).item() == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- common
@pytest.mark.parametrize("name", ["dkd", "dist", "logit_std"])
def test_gradient_reaches_student_only(name: str) -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    loss = LOSSES.build(name)(s, t, labels=torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("name", ["dkd", "dist", "logit_std"])
def test_shape_errors(name: str) -> None:
    loss = LOSSES.build(name)
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ShapeMismatchError, match=rf"{name}.*\(4, 5\).*\(4, 6\)"):
        loss(torch.randn(4, 5), torch.randn(4, 6), labels=y)
    with pytest.raises(ShapeMismatchError, match=rf"{name}: student logits must be 2-D"):
        loss(torch.randn(4, 5, 2), torch.randn(4, 5, 2), labels=y)
