"""Relational losses (rkd, pkt, sp, cc, irg) against loop/numpy references, gradients and shape errors."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from kdforge.losses import ShapeMismatchError
from kdforge.registry import LOSSES


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy().reshape(x.shape[0], -1)


def _huber_mean(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b).ravel()
    return float(np.mean(np.where(d < 1, 0.5 * d * d, d - 0.5)))


# ----------------------------------------------------------------------------- references
def rkd_ref(s: np.ndarray, t: np.ndarray, w_d: float, w_a: float) -> float:
    def dist(x):
        n = len(x)
        d = np.zeros((n, n))
        for i, j in itertools.product(range(n), range(n)):
            if i != j:
                d[i, j] = math.sqrt(sum((x[i] - x[j]) ** 2))
        return d / d[~np.eye(n, dtype=bool)].mean()

    def angle(x):
        n = len(x)
        a = np.zeros((n, n, n))
        for i, j, k in itertools.product(range(n), repeat=3):
            u, v = x[j] - x[i], x[k] - x[i]
            nu, nv = np.linalg.norm(u), np.linalg.norm(v)
            if nu > 0 and nv > 0:
                a[i, j, k] = u @ v / (nu * nv)
        return a

    return w_d * _huber_mean(dist(s), dist(t)) + w_a * _huber_mean(angle(s), angle(t))


def pkt_ref(s: np.ndarray, t: np.ndarray, eps: float = 1e-7) -> float:
    def prob(x):
        n = len(x)
        c = np.array([[(1 + x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])) / 2 for j in range(n)]
                      for i in range(n)])
        return c / c.sum(1, keepdims=True)

    ps, pt = prob(s), prob(t)
    n = len(s)
    return sum(pt[i, j] * math.log((pt[i, j] + eps) / (ps[i, j] + eps)) for i in range(n) for j in range(n)) / n**2


def sp_ref(s: np.ndarray, t: np.ndarray) -> float:
    def gram(x):
        g = np.array([[float(np.dot(a, b)) for b in x] for a in x])
        return np.stack([row / np.sqrt((row**2).sum()) for row in g])

    b = len(s)
    return float(((gram(t) - gram(s)) ** 2).sum() / b**2)


def cc_corr_ref(x: np.ndarray, gamma: float, P: int) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    c = np.zeros((n, n))
    for i, j in itertools.product(range(n), range(n)):
        dot = float(x[i] @ x[j])
        c[i, j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot**p for p in range(P + 1))
    return c


# ----------------------------------------------------------------------------- values
def test_rkd_value_matches_loop_reference():
    s, t = torch.randn(5, 3, dtype=torch.float64) * 2, torch.randn(5, 2, 2, dtype=torch.float64)
    loss = LOSSES.build("rkd")
    assert (loss.w_d, loss.w_a) == (25.0, 50.0)
    got = loss(s, t).item()
    assert got == pytest.approx(rkd_ref(_np(s), _np(t), 25.0, 50.0), rel=1e-9)
    # only distance, only angle
    assert LOSSES.build("rkd", w_a=0)(s, t).item() == pytest.approx(rkd_ref(_np(s), _np(t), 25, 0), rel=1e-9)
    assert LOSSES.build("rkd", w_d=0)(s, t).item() == pytest.approx(rkd_ref(_np(s), _np(t), 0, 50), rel=1e-9)


def test_rkd_is_scale_invariant_and_zero_for_similar_geometry():
    s, t = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    loss = LOSSES.build("rkd")
    assert loss(3.0 * s, t).item() == pytest.approx(loss(s, t).item(), rel=1e-9)
    rot = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))[0]
    assert loss(2.5 * s @ rot + 1.0, s).item() == pytest.approx(0.0, abs=1e-9)


def test_pkt_value_matches_loop_reference():
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    assert LOSSES.build("pkt")(s, t).item() == pytest.approx(pkt_ref(_np(s), _np(t)), rel=1e-5, abs=1e-9)
    assert LOSSES.build("pkt")(t, t).item() == pytest.approx(0.0, abs=1e-9)


def test_sp_value_matches_loop_reference_on_feature_maps():
    s, t = torch.randn(4, 2, 3, 3, dtype=torch.float64), torch.randn(4, 5, 2, 2, dtype=torch.float64)
    assert LOSSES.build("sp")(s, t).item() == pytest.approx(sp_ref(_np(s), _np(t)), rel=1e-9)


def test_cc_value_matches_taylor_reference_and_converges_to_rbf():
    s, t = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    loss = LOSSES.build("cc")
    assert (loss.gamma, loss.P) == (0.4, 2)
    want = float(((cc_corr_ref(_np(s), 0.4, 2) - cc_corr_ref(_np(t), 0.4, 2)) ** 2).mean())
    assert loss(s, t).item() == pytest.approx(want, rel=1e-9)

    def rbf(x):  # exact Gaussian kernel of the normalised embeddings
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return np.array([[math.exp(-0.4 * ((a - b) ** 2).sum()) for b in x] for a in x])

    exact = float(((rbf(_np(s)) - rbf(_np(t))) ** 2).mean())
    assert LOSSES.build("cc", P=25)(s, t).item() == pytest.approx(exact, rel=1e-6)


def _irg_ref(st: list[np.ndarray], tt: list[np.ndarray], w=(0.1, 5.0, 5.0)) -> float:
    def edge(x):
        x = x.reshape(len(x), -1)
        n = len(x)
        d = np.array([[((x[i] - x[j]) ** 2).sum() for j in range(n)] for i in range(n)])
        return d / d.max()

    def tran(a, b):  # a: (N, C, 4, 4) → pool 2×2; b: (N, 2C, 2, 2) → average channel pairs
        n, c = a.shape[:2]
        pooled = np.zeros((n, c, 2, 2))
        for y, x in itertools.product(range(2), range(2)):
            pooled[:, :, y, x] = a[:, :, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean((2, 3))
        halved = np.stack([(b[:, 2 * k] + b[:, 2 * k + 1]) / 2 for k in range(c)], 1)
        d = np.array([((pooled[i] - halved[i]) ** 2).sum() for i in range(n)])
        return d / d.max()

    vert = ((st[-1] - tt[-1]) ** 2).mean()
    edges = np.mean([((edge(a) - edge(b)) ** 2).mean() for a, b in zip(st[:-1], tt[:-1])])
    tr = ((tran(st[0], st[1]) - tran(tt[0], tt[1])) ** 2).mean()
    return float(w[0] * vert + w[1] * edges + w[2] * tr)


def _irg_taps(n=4, grad=False):
    g = torch.Generator().manual_seed(3)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    s = [mk(n, 2, 4, 4), mk(n, 4, 2, 2), mk(n, 3)]
    t = [mk(n, 3, 4, 4), mk(n, 6, 2, 2), mk(n, 3)]
    if grad:
        s = [x.requires_grad_() for x in s]
    return s, t


def test_irg_value_matches_loop_reference():
    s, t = _irg_taps()
    loss = LOSSES.build("irg")
    assert loss.pairwise is False and loss.same_shape is False
    assert (loss.w_vert, loss.w_edge, loss.w_tran) == (0.1, 5.0, 5.0)
    want = _irg_ref([x.numpy() for x in s], [x.numpy() for x in t])
    assert loss(s, t).item() == pytest.approx(want, rel=1e-9)
    # explicit tran_pairs equal the default here; w_tran=0 drops the transformation term
    assert LOSSES.build("irg", tran_pairs=[(0, 1)])(s, t).item() == pytest.approx(want, rel=1e-9)
    no_tran = _irg_ref([x.numpy() for x in s], [x.numpy() for x in t], (0.1, 5.0, 0.0))
    assert LOSSES.build("irg", w_tran=0)(s, t).item() == pytest.approx(no_tran, rel=1e-9)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("name", ["rkd", "pkt", "sp", "cc"])
def test_gradient_reaches_student(name):
    s = torch.randn(6, 3, 2, 2, requires_grad=True)
    t = torch.randn(6, 5, 2, 2)
    loss = LOSSES.build(name)
    assert loss.same_shape is False
    val = loss(s, t)
    assert val.dim() == 0 and torch.isfinite(val)
    val.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_irg_gradient_reaches_every_student_tap():
    s, t = _irg_taps(grad=True)
    val = LOSSES.build("irg")(s, t)
    val.backward()
    for x in s:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["rkd", "pkt", "sp", "cc"])
def test_batch_mismatch_is_a_clear_error(name):
    with pytest.raises(ShapeMismatchError, match=rf"{name}: batch sizes differ.*same batch"):
        LOSSES.build(name)(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ShapeMismatchError, match=rf"{name}: student must be \(N, \.\.\.\)"):
        LOSSES.build(name)(torch.randn(4), torch.randn(4, 3))


def test_rkd_needs_two_samples():
    with pytest.raises(ShapeMismatchError, match="rkd: .*at least 2 samples"):
        LOSSES.build("rkd")(torch.randn(1, 3), torch.randn(1, 3))


def test_irg_errors():
    s, t = _irg_taps()
    loss = LOSSES.build("irg")
    with pytest.raises(ShapeMismatchError, match="irg: needs the same number"):
        loss(s, t[:2])
    with pytest.raises(ShapeMismatchError, match="irg: expects lists"):
        loss(s[0], t[0])
    with pytest.raises(ShapeMismatchError, match=r"irg: vertex \(last\) taps must match"):
        loss(s[:-1] + [torch.randn(4, 5, dtype=torch.float64)], t)
    with pytest.raises(ShapeMismatchError, match=r"irg \(tap 1\): batch sizes differ"):
        loss(s, [t[0], t[1][:3], t[2]])
    with pytest.raises(ShapeMismatchError, match="irg: transformation pair .* needs 4-D"):
        LOSSES.build("irg", tran_pairs=[(0, 1)])([s[0], s[2][:, :2], s[2]], [t[0], t[2][:, :2], t[2]])
    with pytest.raises(ShapeMismatchError, match="channel counts that divide"):
        loss([torch.randn(4, 2, 4, 4), torch.randn(4, 3, 2, 2), torch.randn(4, 3)], t)
