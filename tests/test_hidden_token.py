"""Per-token connector, layer maps, hidden-state losses and MiniLM-v2 relations vs direct computation."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge import CONNECTORS, LOSSES, Distiller, DistillJob, ShapeMismatchError
from kdforge.layermap import hidden_state_job, layer_map, layer_taps


def _mask():
    m = torch.ones(3, 6, dtype=torch.long)
    m[0, 4:] = 0
    m[2, 1:] = 0
    return m


def test_token_linear_projects_per_token():
    conn = CONNECTORS.build("token_linear")
    conn.bind_once((2, 7, 16), (2, 7, 48))
    y = conn(torch.randn(2, 7, 16))
    assert y.shape == (2, 7, 48)
    assert sum(p.numel() for p in conn.parameters()) == 16 * 48 + 48  # not (7·16) × (7·48)
    with pytest.raises(ValueError, match="same tokens"):
        CONNECTORS.build("token_linear").bind_once((2, 7, 16), (2, 9, 48))


def test_shape_mismatch_suggests_token_linear():
    with pytest.raises(ShapeMismatchError, match="token_linear"):
        LOSSES.build("hidden_mse")(torch.randn(2, 5, 8), torch.randn(2, 5, 16))


def test_layer_map_and_taps():
    assert layer_map(4, 12) == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert layer_map(2, 4) == [(0, 1), (1, 3)]
    assert layer_map(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert layer_map(2, 6, "last") == [(0, 4), (1, 5)]
    assert layer_map(2, 6, {0: 1, -1: -1}) == [(0, 1), (1, 5)]
    assert layer_map(2, 6, [(1, 3)]) == [(1, 3)]
    with pytest.raises(ValueError, match=r"layer pair \(2, 3\) is out of range"):
        layer_map(2, 6, {2: 3})
    with pytest.raises(ValueError, match="unknown layer-map strategy 'even'"):
        layer_map(2, 6, "even")
    assert layer_taps("h.{}", ":output.hidden_states[{}]", [(0, 2)]) == (["h.0"], [":output.hidden_states[2]"])
    with pytest.raises(ValueError, match="needs '{}'"):
        layer_taps("h", "h.{}", [(0, 0)])
    job = hidden_state_job("blocks.{}", "blocks.{}", 2, 4, name="hid", warmup_iters=10)
    assert (job.student, job.teacher, job.connector, job.name) == (["blocks.0", "blocks.1"], ["blocks.1", "blocks.3"],
                                                                  "token_linear", "hid")


def test_hidden_mse_and_cosine_vs_direct():
    s, t, m = torch.randn(3, 6, 8, requires_grad=True), torch.randn(3, 6, 8), _mask()
    keep = m.bool()
    mse = LOSSES.build("hidden_mse")(s, t, attention_mask=m)
    torch.testing.assert_close(mse, F.mse_loss(s[keep], t[keep]))
    cos = LOSSES.build("hidden_cosine")(s, t, attention_mask=m)
    want = F.cosine_embedding_loss(s[keep], t[keep], torch.ones(int(keep.sum())))
    torch.testing.assert_close(cos, want)
    torch.testing.assert_close(LOSSES.build("hidden_mse")(s, t), F.mse_loss(s, t))
    tm = torch.rand(3, 6) > 0.5
    torch.testing.assert_close(LOSSES.build("hidden_mse")(s, t, attention_mask=m, token_mask=tm),
                               F.mse_loss(s[keep & tm], t[keep & tm]))
    mse.backward()
    assert s.grad[0, 4:].abs().sum() == 0


def _minilm_direct(sq, tq, heads, mask, causal=False):
    """Per sequence, per relation head, per real query: KL over the real (and past) keys only."""
    vals = []
    for b in range(sq[0].shape[0]):
        n = int(mask[b].sum())
        per_rel = []
        for X, Y in ((0, 0), (1, 1), (2, 2)):
            rows = []
            for side in (tq, sq):
                x, y = side[X][b, :n], side[Y][b, :n]
                d = x.shape[-1] // heads
                r = []
                for a in range(heads):
                    sc = x[:, a * d:(a + 1) * d] @ y[:, a * d:(a + 1) * d].T / math.sqrt(d)
                    if causal:
                        sc = sc.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
                    r.append(F.softmax(sc, -1))
                rows.append(torch.stack(r))  # (A, n, n)
            pt, ps = rows
            kl = (pt * (pt.clamp_min(1e-30).log() - ps.clamp_min(1e-30).log())).sum(-1)  # (A, n)
            per_rel.append(kl.mean(0))  # (n,)
        vals.append(torch.stack(per_rel))  # (3, n)
    return torch.cat(vals, 1).mean(1).sum()


@pytest.mark.parametrize("causal", [False, True])
def test_minilm_v2_vs_direct(causal):
    g = torch.Generator().manual_seed(1)
    sq = [torch.randn(3, 6, 8, generator=g) for _ in range(3)]
    tq = [torch.randn(3, 6, 12, generator=g) for _ in range(3)]
    m = _mask()
    got = LOSSES.build("minilm_v2", num_relation_heads=2, causal=causal)(sq, tq, attention_mask=m)
    torch.testing.assert_close(got, _minilm_direct(sq, tq, 2, m, causal), rtol=1e-5, atol=1e-6)
    fused = LOSSES.build("minilm_v2", num_relation_heads=2, causal=causal, fused_qkv=True)
    torch.testing.assert_close(fused([torch.cat(sq, -1)], [torch.cat(tq, -1)], attention_mask=m), got)


def test_minilm_v2_errors():
    loss = LOSSES.build("minilm_v2", num_relation_heads=3)
    with pytest.raises(ShapeMismatchError, match="num_relation_heads=3 must divide the projection width 8"):
        loss([torch.randn(1, 4, 8)] * 3, [torch.randn(1, 4, 12)] * 3)
    with pytest.raises(ShapeMismatchError, match="needs 3 tap\\(s\\): the q, k and v projections"):
        loss([torch.randn(1, 4, 9)], [torch.randn(1, 4, 12)] * 3)
    with pytest.raises(ValueError, match="subset of \\['qq', 'kk', 'vv'\\]"):
        LOSSES.build("minilm_v2", relations=["qk"])


class TinyEncoder(nn.Module):
    def __init__(self, d: int, n_layers: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
                                    for _ in range(n_layers))
        self.head = nn.Linear(d, 20)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        pad = None if attention_mask is None else ~attention_mask.bool()
        for b in self.blocks:
            h = b(h, src_key_padding_mask=pad)
        return self.head(h)


def test_hidden_state_job_across_widths_trains():
    student, teacher = TinyEncoder(8, 2), TinyEncoder(16, 4)
    jobs = [DistillJob(loss="forward_kl", student="", teacher="", name="kl"),
            hidden_state_job("blocks.{}", "blocks.{}", 2, 4, loss="hidden_mse", name="hid")]
    d = Distiller(student, teacher, jobs)
    ids, m = torch.randint(0, 20, (3, 6)), _mask()
    d.dry_run(input_ids=ids, attention_mask=m)
    opt = torch.optim.Adam(d.learnable_parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        _, kd = d(input_ids=ids, attention_mask=m)
        opt.zero_grad()
        kd.backward()
        opt.step()
        first = first if first is not None else kd.item()
    assert kd.item() < first
    assert [type(c).__name__ for c in d.jobs[1].connectors] == ["TokenLinear", "TokenLinear"]


def test_tokens_to_map_and_map_to_tokens():
    t2m = CONNECTORS.build("tokens_to_map")
    t2m.bind_once((2, 1 + 16, 24), (2, 32, 8, 8))                     # ViT-like student (cls + 4×4) → CNN map
    y = t2m(torch.randn(2, 17, 24))
    assert y.shape == (2, 32, 8, 8)
    m2t = CONNECTORS.build("map_to_tokens")
    m2t.bind_once((2, 16, 8, 8), (2, 1 + 16, 40))                     # CNN student → ViT tokens (cls + 4×4)
    z = m2t(torch.randn(2, 16, 8, 8))
    assert z.shape == (2, 17, 40)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(m2t(x)[:, 0], m2t.proj(x.mean((2, 3))))  # the class token ← pooled map
    with pytest.raises(ValueError, match="do not form a square grid"):
        CONNECTORS.build("tokens_to_map", num_prefix_tokens=0).bind_once((2, 17, 24), (2, 32, 8, 8))
    with pytest.raises(ValueError, match="tokens \\(B, L, D\\) to a feature map"):
        CONNECTORS.build("tokens_to_map").bind_once((2, 24), (2, 32, 8, 8))
