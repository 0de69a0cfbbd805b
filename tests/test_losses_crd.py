"""CRD: value vs a numpy reference, memory-bank update, Z estimation, state_dict round trip, errors."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from kdforge.losses import ShapeMismatchError
from kdforge.losses.crd import CRDLoss
from kdforge.registry import LOSSES

N_DATA, DIM, K, T, MOM = 10, 4, 3, 0.07, 0.5


def _small(**kw) -> CRDLoss:
    return LOSSES.build("crd", n_data=N_DATA, feat_dim=DIM, nce_k=K, **kw).double()


def _batch():
    g = torch.Generator().manual_seed(7)
    s = torch.randn(3, 5, generator=g, dtype=torch.float64)
    t = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64)
    index = torch.tensor([4, 0, 9])
    neg = torch.tensor([[1, 2, 3], [5, 5, 8], [0, 4, 7]])
    return s, t, index, neg


def _embed_ref(x: np.ndarray, lin: torch.nn.Linear) -> np.ndarray:
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    out = np.stack([w @ row + b for row in x.reshape(len(x), -1)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _nce_ref(p: np.ndarray, n_data: int, eps: float = 1e-7) -> float:
    m = p.shape[1] - 1
    pn = 1.0 / n_data
    total = 0.0
    for i in range(len(p)):
        total += math.log(p[i, 0] / (p[i, 0] + m * pn + eps))
        for k in range(1, m + 1):
            total += math.log(m * pn / (p[i, k] + m * pn + eps))
    return -total / len(p)


def _crd_ref(loss: CRDLoss, s, t, index, neg, z=None):
    """Loss value, Z pair and updated banks, computed with numpy loops from the module's parameters."""
    es, et = _embed_ref(s.numpy(), loss.embed_s.linear), _embed_ref(t.numpy(), loss.embed_t.linear)
    ms, mt = loss.memory_s.numpy().copy(), loss.memory_t.numpy().copy()
    rows = [[int(index[i])] + [int(j) for j in neg[i]] for i in range(len(index))]
    out_s = np.array([[math.exp(mt[r] @ es[i] / T) for r in rows[i]] for i in range(len(rows))])
    out_t = np.array([[math.exp(ms[r] @ et[i] / T) for r in rows[i]] for i in range(len(rows))])
    if z is None:
        z = (out_s.mean() * N_DATA, out_t.mean() * N_DATA)
    value = _nce_ref(out_s / z[0], N_DATA) + _nce_ref(out_t / z[1], N_DATA)
    for bank, e in ((ms, es), (mt, et)):
        for i, y in enumerate(index.tolist()):
            v = MOM * bank[y] + (1 - MOM) * e[i]
            bank[y] = v / np.linalg.norm(v)
    return value, z, ms, mt


def test_defaults_and_buffers():
    loss = LOSSES.build("crd", n_data=50)
    assert (loss.feat_dim, loss.nce_k, loss.nce_t, loss.nce_mom) == (128, 16384, 0.07, 0.5)
    assert loss.memory_s.shape == loss.memory_t.shape == (50, 128)
    assert loss.same_shape is False
    bound = 1 / math.sqrt(128 / 3)
    assert loss.memory_s.abs().max() <= bound and loss.z.tolist() == [-1.0, -1.0]
    assert {"memory_s", "memory_t", "z"} <= set(loss.state_dict())


def test_value_memory_update_and_fixed_z_match_reference():
    loss = _small()
    s, t, index, neg = _batch()
    loss.embed_s(s), loss.embed_t(t)  # materialise the lazy heads so the reference can read them
    want, z, ms, mt = _crd_ref(loss, s, t, index, neg)
    got = loss(s, t, index=index, contrast_index=neg)
    assert got.item() == pytest.approx(want, rel=1e-9)
    assert loss.z.tolist() == pytest.approx(list(z), rel=1e-9)
    np.testing.assert_allclose(loss.memory_s.numpy(), ms, rtol=1e-9)
    np.testing.assert_allclose(loss.memory_t.numpy(), mt, rtol=1e-9)
    untouched = [i for i in range(N_DATA) if i not in index.tolist()]
    assert torch.equal(loss.memory_s[untouched], torch.as_tensor(ms[untouched]))
    # second batch: Z is kept from the first one, not re-estimated
    s2, t2 = s.flip(0), t.flip(0)
    want2, _, _, _ = _crd_ref(loss, s2, t2, index, neg, z=z)
    assert loss(s2, t2, index=index, contrast_index=neg).item() == pytest.approx(want2, rel=1e-9)
    assert loss.z.tolist() == pytest.approx(list(z), rel=1e-12)


def test_official_contrast_index_format_with_positive_first():
    s, t, index, neg = _batch()
    a, b = _small(), _small()
    a.embed_s(s), a.embed_t(t)
    b.load_state_dict(a.state_dict())
    va = a(s, t, index=index, contrast_index=neg)
    vb = b(s, t, index=index, contrast_index=torch.cat([index[:, None], neg], 1))
    assert va.item() == pytest.approx(vb.item(), rel=1e-12)


def test_uniform_negatives_exclude_the_positive():
    loss = LOSSES.build("crd", n_data=5, feat_dim=4, nce_k=2000, negatives="uniform")
    index = torch.tensor([0, 2, 4])
    idx = loss._contrast({}, index)
    assert idx.shape == (3, 2001) and torch.equal(idx[:, 0], index)
    for row, y in zip(idx[:, 1:], index.tolist()):
        assert set(row.tolist()) == set(range(5)) - {y}


def test_gradient_reaches_student_and_both_heads():
    loss = LOSSES.build("crd", n_data=20, feat_dim=8, nce_k=6, negatives="uniform")
    s = torch.randn(4, 3, 2, 2, requires_grad=True)
    t = torch.randn(4, 7)
    val = loss(s, t, index=torch.tensor([1, 5, 7, 19]))
    assert val.dim() == 0 and torch.isfinite(val)
    val.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert loss.embed_t.linear.weight.grad is not None and loss.embed_t.linear.weight.grad.abs().sum() > 0
    assert not loss.memory_s.requires_grad


def test_eval_mode_leaves_memory_alone():
    loss = LOSSES.build("crd", n_data=20, feat_dim=8, nce_k=6, negatives="uniform").eval()
    before = loss.memory_s.clone(), loss.memory_t.clone()
    with torch.no_grad():
        loss(torch.randn(4, 3), torch.randn(4, 5), index=torch.arange(4))
    assert torch.equal(loss.memory_s, before[0]) and torch.equal(loss.memory_t, before[1])
    assert (loss.z > 0).all()  # Z is still estimated on the first batch seen


def test_state_dict_round_trip_gives_the_same_loss():
    kw = dict(n_data=30, feat_dim=8, nce_k=10, negatives="uniform")
    loss = LOSSES.build("crd", **kw)
    s, t = torch.randn(4, 6), torch.randn(4, 5)
    loss(s, t, index=torch.tensor([0, 3, 4, 29]))  # sets Z, moves the banks, materialises the heads
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    buf.seek(0)
    fresh = LOSSES.build("crd", **kw)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.z, loss.z) and torch.equal(fresh.memory_t, loss.memory_t)
    index = torch.tensor([1, 2, 3, 28])
    torch.manual_seed(123)
    a = loss(s, t, index=index)
    torch.manual_seed(123)
    b = fresh(s, t, index=index)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="crd: n_data is required"):
        LOSSES.build("crd")
    loss = LOSSES.build("crd", n_data=10, feat_dim=4, nce_k=3, negatives="uniform")
    s, t = torch.randn(3, 5), torch.randn(3, 6)
    with pytest.raises(ValueError, match=r"ctx\['index'\].*kdforge\.data\.WithIndex"):
        loss(s, t)
    with pytest.raises(ShapeMismatchError, match="crd: batch sizes differ"):
        loss(s, torch.randn(2, 6), index=torch.arange(3))
    with pytest.raises(ShapeMismatchError, match="crd: index has 2 entries for a batch of 3"):
        loss(s, t, index=torch.arange(2))
    with pytest.raises(ValueError, match=r"crd: index values must lie in \[0, n_data=10\)"):
        loss(s, t, index=torch.tensor([0, 1, 10]))
    with pytest.raises(ShapeMismatchError, match=r"crd: contrast_index must be \(N, K\)"):
        loss(s, t, index=torch.arange(3), contrast_index=torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------------------- class-aware negatives
def _labelled(n_data: int = 60, classes: int = 4, **kw) -> tuple[CRDLoss, torch.Tensor]:
    labels = torch.randint(0, classes, (n_data,), generator=torch.Generator().manual_seed(3))
    loss = LOSSES.build("crd", n_data=n_data, feat_dim=4, **kw)
    loss.set_dataset_labels(labels)
    return loss, labels


def test_class_negatives_are_the_default_and_never_share_the_anchor_class():
    loss, labels = _labelled(nce_k=3000)
    assert loss.negatives == "class"
    index = torch.arange(60)
    idx = loss._contrast({}, index)
    assert idx.shape == (60, 3001) and torch.equal(idx[:, 0], index)
    neg = idx[:, 1:]
    assert (labels[neg] != labels[index].unsqueeze(1)).all()
    # uniform over the other classes' samples: every one of them is drawn (3000 draws, <= 60 candidates)
    for i in (0, 17, 59):
        assert set(neg[i].tolist()) == set(torch.nonzero(labels != labels[i]).flatten().tolist())


def test_class_negatives_are_uniform_over_the_other_classes():
    """Frequencies of the drawn negatives match 1/|other classes' samples| (chi-square, fixed seed)."""
    from scipy.stats import chisquare

    labels = torch.tensor([0] * 5 + [1] * 20 + [2] * 15)  # unequal classes
    loss = LOSSES.build("crd", n_data=40, feat_dim=4, nce_k=20000)
    loss.set_dataset_labels(labels)
    torch.manual_seed(0)
    neg = loss._class_negatives(torch.tensor([2]))[0]  # anchor of class 0: 35 candidates
    counts = torch.bincount(neg, minlength=40)
    assert counts[:5].sum() == 0
    assert chisquare(counts[5:].numpy()).pvalue > 1e-3


def test_arbitrary_label_values_and_the_label_check():
    labels = torch.tensor([7, -1, 7, 3, 3, -1])  # not 0..C-1
    loss = LOSSES.build("crd", n_data=6, feat_dim=4, nce_k=50)
    loss.set_dataset_labels(labels)
    neg = loss._class_negatives(torch.tensor([0, 1, 3]))
    assert (labels[neg] != labels[torch.tensor([0, 1, 3])].unsqueeze(1)).all()
    s, t = torch.randn(3, 5), torch.randn(3, 6)
    loss(s, t, index=torch.tensor([0, 1, 3]), labels=torch.tensor([7, -1, 3]))  # consistent: fine
    fresh = LOSSES.build("crd", n_data=6, feat_dim=4, nce_k=50)
    fresh.set_dataset_labels(labels)
    with pytest.raises(ValueError, match="labels differ from the dataset labels at its indices"):
        fresh(s, t, index=torch.tensor([0, 1, 3]), labels=torch.tensor([7, 3, 3]))


def test_contrast_index_overrides_class_sampling():
    loss, _ = _labelled(nce_k=3)
    index = torch.tensor([0, 1])
    given = torch.tensor([[5, 6, 7], [8, 9, 10]])
    assert torch.equal(loss._contrast({"contrast_index": given}, index)[:, 1:], given)
    # and it needs no labels at all
    bare = LOSSES.build("crd", n_data=20, feat_dim=4, nce_k=3)
    assert torch.equal(bare._contrast({"contrast_index": given}, index)[:, 1:], given)


def test_uniform_mode_is_unchanged_by_labels():
    a = LOSSES.build("crd", n_data=20, feat_dim=4, nce_k=40, negatives="uniform")
    b = LOSSES.build("crd", n_data=20, feat_dim=4, nce_k=40, negatives="uniform")
    b.set_dataset_labels(torch.arange(20) % 2)
    index = torch.tensor([0, 3, 19])
    torch.manual_seed(5)
    ia = a._contrast({}, index)
    torch.manual_seed(5)
    assert torch.equal(ia, b._contrast({}, index))
    a.set_dataset_labels(None)  # no labels: fine for uniform


def test_class_mode_errors_name_the_fix():
    loss = LOSSES.build("crd", n_data=10, feat_dim=4, nce_k=3)
    s, t = torch.randn(3, 5), torch.randn(3, 6)
    with pytest.raises(ValueError, match=r"set_dataset_labels.*negatives: uniform"):
        loss(s, t, index=torch.arange(3))
    with pytest.raises(ValueError, match=r"no `targets` attribute.*negatives: uniform"):
        loss.set_dataset_labels(None)
    with pytest.raises(ValueError, match=r"n_data=10 but the training set has 12 samples; set the crd loss's n_data: 12"):
        loss.set_dataset_labels(torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="no sample of another class"):
        loss.set_dataset_labels(torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        loss.set_dataset_labels(torch.zeros(10))
    with pytest.raises(ValueError, match=r"negatives must be one of \('class', 'uniform'\)"):
        LOSSES.build("crd", n_data=10, negatives="random")


def test_labels_follow_the_module_to_another_dtype_and_are_not_saved():
    loss, labels = _labelled(nce_k=3)
    loss.double()
    assert loss.labels_by_index is not None and loss.labels_by_index.dtype == torch.long
    assert not any("label" in k or "_class" in k for k in loss.state_dict())
