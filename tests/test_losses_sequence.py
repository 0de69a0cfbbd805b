"""Token-level losses vs a direct computation (masks, ignore_index, label shift, reductions, chunking)."""
import pytest
import torch
import torch.nn.functional as F

from kdforge import LOSSES, ShapeMismatchError
from kdforge.losses.sequence import token_mask

B, L, V = 3, 6, 11


def _data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(B, L, V, generator=g) * 2).to(dtype).requires_grad_(True)
    t = (torch.randn(B, L, V, generator=g) * 2).to(dtype)
    labels = torch.randint(0, V, (B, L), generator=g)
    labels[0, 4:] = -100            # padding at the end of sequence 0
    labels[1, :2] = -100            # a "prompt" in sequence 1
    labels[2, :] = -100             # a sequence with no target at all
    att = torch.ones(B, L, dtype=torch.long)
    att[0, 5:] = 0
    return s, t, labels, att


# direct per-token divergences (written independently of the library, as in the official code)
def d_fkl(s, t):
    p = F.softmax(t, -1)
    return (p * (F.log_softmax(t, -1) - F.log_softmax(s, -1))).sum(-1)


def d_rkl(s, t):
    q = F.softmax(s, -1)
    return (q * (F.log_softmax(s, -1) - F.log_softmax(t, -1))).sum(-1)


def d_jsd_trl(s, t, beta):
    """TRL's generalized_jsd_loss (F.kl_div form), per token."""
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    b = torch.tensor(beta)
    m = torch.logsumexp(torch.stack([ls + torch.log(1 - b), lt + torch.log(b)]), 0)
    kl_t = F.kl_div(m, lt, reduction="none", log_target=True).sum(-1)
    kl_s = F.kl_div(m, ls, reduction="none", log_target=True).sum(-1)
    return b * kl_t + (1 - b) * kl_s


def d_skew_official(s, t, lam, reverse):
    """DistiLLM's skewed_forward_kl / skewed_reverse_kl, per token (forward: cross-entropy form)."""
    p, q = F.softmax(t, -1), F.softmax(s, -1)
    if not reverse:
        return -(p * torch.log(lam * p + (1 - lam) * q)).sum(-1)
    return -(q * torch.log((1 - lam) * p + lam * q)).sum(-1) + (q * F.log_softmax(s, -1)).sum(-1)


def d_tvd(s, t):
    return 0.5 * (F.softmax(t, -1) - F.softmax(s, -1)).abs().sum(-1)


def masked_mean(per_tok, mask, reduction="token"):
    mask = mask.float()
    if reduction == "token":
        return (per_tok * mask).sum() / mask.sum()
    n = mask.sum(1)
    keep = n > 0
    return ((per_tok * mask).sum(1)[keep] / n[keep]).mean()


def shifted(labels):
    real = labels != -100
    return torch.cat([real[:, 1:], torch.zeros(B, 1, dtype=torch.bool)], 1)


CASES = [
    ("forward_kl", {}, lambda s, t: d_fkl(s, t)),
    ("forward_kl", {"T": 2.0}, lambda s, t: 4.0 * d_fkl(s / 2, t / 2)),
    ("reverse_kl", {}, d_rkl),
    ("reverse_kl", {"T": 3.0}, lambda s, t: 9.0 * d_rkl(s / 3, t / 3)),
    ("jsd", {}, lambda s, t: d_jsd_trl(s, t, 0.5)),
    ("jsd", {"beta": 0.1, "T": 2.0}, lambda s, t: d_jsd_trl(s / 2, t / 2, 0.1)),
    ("jsd", {"beta": 0.0}, d_fkl),
    ("jsd", {"beta": 1.0}, d_rkl),
    ("skew_kl", {}, lambda s, t: d_skew_official(s, t, 0.1, False) + (F.softmax(t, -1) * F.log_softmax(t, -1)).sum(-1)),
    ("skew_kl", {"alpha": 0.3, "reverse": True}, lambda s, t: d_skew_official(s, t, 0.3, True)),
    ("tvd", {}, d_tvd),
]


@pytest.mark.parametrize("name, kwargs, direct", CASES)
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_value_and_grad_vs_direct_with_labels_and_attention(name, kwargs, direct, chunk_size):
    s, t, labels, att = _data()
    loss = LOSSES.build(name, chunk_size=chunk_size, **kwargs)
    got = loss(s, t, labels=labels, attention_mask=att)
    (g_got,) = torch.autograd.grad(got, s)
    mask = shifted(labels) & att.bool()
    want = masked_mean(direct(s, t), mask)
    (g_want,) = torch.autograd.grad(want, s)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-7)
    assert g_got[2].abs().sum() == 0 and g_got[0, 4:].abs().sum() == 0  # masked tokens get no gradient


@pytest.mark.parametrize("name, kwargs, direct", CASES[:1] + CASES[4:5] + CASES[-1:])
def test_sequence_reduction_label_shift_0_and_token_mask(name, kwargs, direct):
    s, t, labels, att = _data()
    per = direct(s, t)
    loss = LOSSES.build(name, reduction="sequence", label_shift=0, **kwargs)
    got = loss(s, t, labels=labels)
    torch.testing.assert_close(got, masked_mean(per, labels != -100, "sequence"), rtol=1e-5, atol=1e-6)
    tm = torch.rand(B, L) > 0.4
    got = LOSSES.build(name, **kwargs)(s, t, token_mask=tm)
    torch.testing.assert_close(got, masked_mean(per, tm), rtol=1e-5, atol=1e-6)
    got = LOSSES.build(name, **kwargs)(s, t)  # no mask: every token
    torch.testing.assert_close(got, per.mean(), rtol=1e-5, atol=1e-6)
    got = LOSSES.build(name, **kwargs)(s.reshape(-1, V), t.reshape(-1, V), labels=torch.zeros(B * L))  # (N, V)
    torch.testing.assert_close(got, per.mean(), rtol=1e-5, atol=1e-6)


def test_identical_distributions_give_zero_and_bf16_works():
    s, t, labels, att = _data()
    for name in ("forward_kl", "reverse_kl", "jsd", "skew_kl", "tvd"):
        assert LOSSES.build(name)(s, s.detach(), labels=labels).abs().item() < 1e-6
    sb = s.detach().bfloat16().requires_grad_(True)
    val = LOSSES.build("forward_kl")(sb, t.bfloat16(), labels=labels)
    val.backward()
    assert val.dtype == torch.float32 and sb.grad.dtype == torch.bfloat16
    want = masked_mean(d_fkl(sb.detach().float(), t.bfloat16().float()), shifted(labels))
    torch.testing.assert_close(val, want, rtol=1e-4, atol=1e-5)


def test_no_real_token_gives_zero_with_grad():
    s, t, labels, _ = _data()
    val = LOSSES.build("jsd")(s, t, labels=torch.full_like(labels, -100))
    val.backward()
    assert val.item() == 0 and s.grad.abs().sum() == 0


def test_no_grad_mode_and_mask_helper():
    s, t, labels, att = _data()
    with torch.no_grad():
        v = LOSSES.build("forward_kl")(s, t, labels=labels)
    assert not v.requires_grad
    m = token_mask((B, L), {"labels": labels, "attention_mask": att, "token_mask": torch.ones(B, L)})
    assert torch.equal(m, shifted(labels) & att.bool())
    assert token_mask((B, L), {"labels": torch.zeros(B)}) is None  # one label per sequence: not a token mask


def test_errors():
    s, t, labels, _ = _data()
    with pytest.raises(ShapeMismatchError, match="vocabulary 11 vs teacher 12.*one tokenizer"):
        LOSSES.build("forward_kl")(s, torch.randn(B, L, 12))
    with pytest.raises(ShapeMismatchError, match="logits must be \\(B, L, V\\)"):
        LOSSES.build("jsd")(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5))
    with pytest.raises(ShapeMismatchError, match="attention_mask must be a tensor of shape \\(3, 6\\)"):
        LOSSES.build("tvd")(s, t, attention_mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match="beta must be in \\[0, 1\\]"):
        LOSSES.build("jsd", beta=1.5)
    with pytest.raises(ValueError, match="reduction must be 'token' or 'sequence'"):
        LOSSES.build("reverse_kl", reduction="batchmean")
