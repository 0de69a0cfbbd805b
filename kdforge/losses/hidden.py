r"""Token-feature losses for transformers: hidden states and self-attention relations, with padding masks.

Inputs are token features ``(B, L, D)`` (a block's output, a q/k/v projection). Real tokens come
from the loss context: ``token_mask`` and/or ``attention_mask`` (``(B, L)``, 1 = real token), combined
with AND; without either every token counts. (``labels`` are not used here: a hidden state belongs to
its input token, whether or not that token has a target.)
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_same_shape


def feature_mask(shape: Sequence[int], ctx: Mapping[str, Any], device: torch.device) -> Tensor | None:
    """``(B, L)`` bool mask of real tokens from ``token_mask`` / ``attention_mask`` in ``ctx``, or ``None``."""
    shape = tuple(shape)
    out = None
    for key in ("token_mask", "attention_mask"):
        m = ctx.get(key)
        if m is None:
            continue
        if not isinstance(m, Tensor) or tuple(m.shape) != shape:
            got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise ShapeMismatchError(f"{key} must be a tensor of shape {shape} (one entry per token), got {got}")
        m = m.to(device).bool()
        out = m if out is None else out & m
    return out


def masked_token_mean(per_token: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``per_token`` ``(B, L)`` over real tokens (0 with gradient when there is none)."""
    if mask is None:
        return per_token.mean()
    w = mask.to(per_token.dtype)
    return (per_token * w).sum() / w.sum().clamp_min(1)


def _check_tokens(x: Tensor, name: str, loss: str) -> None:
    if x.dim() != 3:
        raise ShapeMismatchError(f"{loss}: {name} must be token features (B, L, D), got {tuple(x.shape)}; tap a "
                                 f"block's output (e.g. 'transformer.h.3' or 'encoder.layer.3:output[0]')")


@LOSSES.register("hidden_mse")
class HiddenMSE(DistillLoss):
    r"""Hidden-state MSE over real tokens (TinyBERT: Jiao et al., *TinyBERT: Distilling BERT for Natural
    Language Understanding*, Findings of EMNLP 2020, Eq. 7, with the learnable :math:`W_h` as the
    ``token_linear`` connector):

    .. math:: \mathcal{L} = \frac{1}{\sum_i m_i} \sum_i m_i \cdot \frac{1}{D}\,\| W_h h^S_i - h^T_i \|^2

    TinyBERT's ``MSELoss`` averages over all positions; here padded positions are left out.
    """

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        _check_tokens(student, "student", "hidden_mse")
        check_same_shape(student, teacher, "hidden_mse")
        per = (student.float() - teacher.float()).pow(2).mean(-1)
        return masked_token_mean(per, feature_mask(student.shape[:2], ctx, student.device))


@LOSSES.register("hidden_cosine")
class HiddenCosine(DistillLoss):
    r"""Hidden-state cosine loss over real tokens (DistilBERT: Sanh, Debut, Chaumond & Wolf, *DistilBERT, a
    distilled version of BERT*, 2019 — ``CosineEmbeddingLoss`` with target 1 on the masked hidden states):

    .. math:: \mathcal{L} = \frac{1}{\sum_i m_i} \sum_i m_i \big(1 - \cos(h^S_i, h^T_i)\big)

    Scale-free: only the direction of each token's hidden state is matched.
    """

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        _check_tokens(student, "student", "hidden_cosine")
        check_same_shape(student, teacher, "hidden_cosine")
        per = 1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)
        return masked_token_mean(per, feature_mask(student.shape[:2], ctx, student.device))


@LOSSES.register("minilm_v2")
class MiniLMv2(DistillLoss):
    r"""Multi-head self-attention relation distillation (Wang, Bao, Huang, Dong & Wei, *MiniLMv2:
    Multi-Head Self-Attention Relation Distillation for Compressing Pretrained Transformers*, Findings
    of ACL 2021, Eqs. 3–5), computed from tapped query/key/value projections — no model edits, and it
    works when the attention itself is a fused kernel.

    The queries (keys, values) of all heads are concatenated and split into :math:`A_r` relation heads of
    width :math:`d_r = D / A_r` (the student and teacher may have different widths and head counts);
    for each relation :math:`(X, Y) \in \{QQ, KK, VV\}`:

    .. math::
        R^{XY}_a = \mathrm{softmax}\Big(\frac{X_a Y_a^\top}{\sqrt{d_r}}\Big), \qquad
        \mathcal{L} = \sum_{(X,Y)} \frac{1}{A_r \sum_t m_t} \sum_{a}\sum_{t:\,m_t=1}
                      \mathrm{KL}\big(R^{XY,T}_{a,t} \,\|\, R^{XY,S}_{a,t}\big)

    Padded keys are excluded from the softmax (``attention_mask``/``token_mask``) and padded query
    rows from the mean; ``causal=True`` also masks future keys (decoder models). The job taps three
    projections per side, in order q, k, v (``["encoder.layer.5.attention.self.query", "…key",
    "…value"]``), or one fused projection per side with ``fused_qkv=True`` (GPT-2's
    ``"transformer.h.3.attn.c_attn"``, split into three equal parts). ``num_relation_heads`` must
    divide both widths (the paper: 12 for base-size, 48 for large teachers). ``relations`` may pick a
    subset, e.g. ``["qq", "kk"]``.
    """

    pairwise = False
    same_shape = False

    def __init__(self, num_relation_heads: int = 12, relations: Sequence[str] = ("qq", "kk", "vv"),
                 fused_qkv: bool = False, causal: bool = False) -> None:
        super().__init__()
        if num_relation_heads < 1:
            raise ValueError(f"minilm_v2: num_relation_heads must be >= 1, got {num_relation_heads}")
        bad = [r for r in relations if r not in ("qq", "kk", "vv")]
        if bad or not relations:
            raise ValueError(f"minilm_v2: relations must be a non-empty subset of ['qq', 'kk', 'vv'], got {list(relations)}")
        self.heads, self.relations, self.fused, self.causal = num_relation_heads, tuple(relations), fused_qkv, causal

    def _qkv(self, taps: Sequence[Tensor], side: str) -> dict[str, Tensor]:
        want = 1 if self.fused else 3
        if len(taps) != want:
            how = "one fused q/k/v projection (fused_qkv=True)" if self.fused else "the q, k and v projections, in that order"
            raise ShapeMismatchError(f"minilm_v2: the {side} needs {want} tap(s): {how}; got {len(taps)}")
        for x in taps:
            _check_tokens(x, side, "minilm_v2")
        if self.fused:
            x = taps[0]
            if x.shape[-1] % 3:
                raise ShapeMismatchError(f"minilm_v2: a fused q/k/v tap has 3·D features, got {x.shape[-1]} on the {side}")
            taps = list(x.split(x.shape[-1] // 3, dim=-1))
        return dict(zip("qkv", taps))

    def _relation(self, x: Tensor, y: Tensor, key_mask: Tensor | None) -> Tensor:
        B, L, D = x.shape
        if D % self.heads:
            raise ShapeMismatchError(f"minilm_v2: num_relation_heads={self.heads} must divide the projection width "
                                     f"{D}; pick a common divisor of the student's and the teacher's widths")
        d = D // self.heads
        xa = x.float().view(B, L, self.heads, d).transpose(1, 2)  # (B, A, L, d)
        ya = y.float().view(B, L, self.heads, d).transpose(1, 2)
        scores = xa @ ya.transpose(-1, -2) / math.sqrt(d)          # (B, A, L, L)
        low = torch.finfo(scores.dtype).min  # not -inf: a fully masked row stays finite (and gets weight 0)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], low)
        if self.causal:
            future = torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, low)
        return F.log_softmax(scores, -1)

    def forward(self, student: list[Tensor], teacher: list[Tensor], **ctx: Any) -> Tensor:
        s, t = self._qkv(student, "student"), self._qkv(teacher, "teacher")
        B, L = s["q"].shape[:2]
        if t["q"].shape[:2] != (B, L):
            raise ShapeMismatchError(f"minilm_v2: student tokens {(B, L)} vs teacher {tuple(t['q'].shape[:2])}; feed "
                                     f"both models the same batch")
        mask = feature_mask((B, L), ctx, s["q"].device)
        total: Tensor = torch.zeros((), device=s["q"].device)
        for rel in self.relations:
            a, b = rel[0], rel[1]
            log_s = self._relation(s[a], s[b], mask)
            log_t = self._relation(t[a], t[b], mask)
            p_t = log_t.exp()
            kl = (p_t * (log_t - log_s)).sum(-1).mean(1)  # (B, L): mean over relation heads
            total = total + masked_token_mean(kl, mask)
        return total

    def extra_repr(self) -> str:
        return f"num_relation_heads={self.heads}, relations={list(self.relations)}, fused_qkv={self.fused}, causal={self.causal}"


__all__ = ["HiddenMSE", "HiddenCosine", "MiniLMv2", "feature_mask", "masked_token_mean"]
