r"""Token-level distillation losses for sequence models: logits ``(B, L, V)`` compared per token.

Every loss here compares, at each real token position :math:`i`, the teacher's next-token
distribution :math:`p_i = \mathrm{softmax}(t_i / T)` with the student's
:math:`q_i = \mathrm{softmax}(s_i / T)` by a divergence :math:`D(p_i, q_i)` and averages over the
real tokens:

.. math:: \mathcal{L} = \sum_i w_i\, D(p_i, q_i), \qquad
          w_i = \frac{m_i}{\sum_j m_j} \;(\texttt{reduction="token"}) \quad\text{or}\quad
          w_i = \frac{m_i}{S\, \sum_{j \in \mathrm{seq}(i)} m_j} \;(\texttt{reduction="sequence"})

``"token"`` (default, what TRL's GKD, DistiLLM and MiniLLM do) weights every real token equally, so
long sequences count more; ``"sequence"`` first averages within each sequence, then over the
:math:`S` sequences that have a real token, so every sequence counts equally.

Which tokens are real (:math:`m_i = 1`) comes from the loss context, all that are given combined
with AND:

* ``token_mask`` — a ``(B, L)`` bool/0-1 mask aligned with the logits, taken as it is;
* ``labels`` — a ``(B, L)`` tensor with ``ignore_index`` (-100) at positions without a target. With
  ``label_shift=1`` (default, the Hugging Face causal-LM convention: ``labels`` are the *unshifted*
  input ids and the logit at position ``i`` predicts token ``i + 1``) position ``i`` is real when
  ``labels[:, i + 1] != ignore_index`` and the last position never is — exactly TRL's
  ``logits[:, :-1]`` ↔ ``labels[:, 1:]``. Use ``label_shift=0`` for encoders (masked-LM, token
  classification) whose labels are aligned with the logits. Labels of another shape (one class per
  sequence) are not a token mask and are ignored;
* ``attention_mask`` — a ``(B, L)`` padding mask (1 = real token).

With none of them every position counts. Logits may also be ``(N, V)`` (tokens already flattened;
then only a ``(N,)`` ``token_mask`` applies).

Memory. With a 32k–150k vocabulary the logits dominate memory, and a direct implementation
materialises several full-size float32 tensors (both log-softmaxes, the probabilities, the
element-wise product — and autograd keeps some of them for backward). These losses instead loop over
chunks of tokens (``chunk_size`` tokens, default: as many as fit in 2²⁰ float32 values per
temporary) and compute each chunk's gradient with respect to the student logits right away, so the
peak is one gradient buffer the size of the student logits (in their dtype) plus chunk-sized
temporaries (about 8 of them); masked tokens are skipped entirely. ``benchmarks/token_loss_memory.py`` measures the
peak against a direct implementation. The teacher side is a constant (no gradient flows to it), as in
every recipe; double backward is not supported.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError

IGNORE_INDEX = -100
#: float32 values per chunk temporary when ``chunk_size`` is not given (4 MiB; about 8 temporaries are alive at once)
CHUNK_ELEMENTS = 1 << 20

Divergence = Callable[[Tensor, Tensor], Tensor]  # (n, V) fp32 student, teacher logits (already / T) → (n,)


# ----------------------------------------------------------------------------------------- masks
def token_mask(shape: tuple[int, ...], ctx: Mapping[str, Any], label_shift: int = 1,
               ignore_index: int = IGNORE_INDEX, device: torch.device | None = None) -> Tensor | None:
    """The ``(B, L)`` bool mask of real token positions from ``ctx`` (see the module docstring), or
    ``None`` when the context names none (every position counts). ``shape`` is the logits' ``(B, L)``."""
    shape = tuple(shape)
    masks: list[Tensor] = []
    given = ctx.get("token_mask")
    if given is not None:
        masks.append(_as_mask(given, shape, "token_mask"))
    labels = ctx.get("labels")
    if isinstance(labels, Tensor) and len(shape) == 2 and tuple(labels.shape) == shape:
        real = labels != ignore_index
        if label_shift:
            if not 0 < label_shift < shape[1] + 1:
                raise ValueError(f"label_shift={label_shift} does not fit sequences of length {shape[1]}")
            real = torch.cat([real[:, label_shift:], real.new_zeros(shape[0], label_shift)], 1)
        masks.append(real)
    att = ctx.get("attention_mask")
    if isinstance(att, Tensor) and len(shape) == 2:
        masks.append(_as_mask(att, shape, "attention_mask"))
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out.to(device) if device is not None else out


def _as_mask(m: Any, shape: tuple[int, ...], name: str) -> Tensor:
    if not isinstance(m, Tensor) or tuple(m.shape) != shape:
        got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ShapeMismatchError(f"{name} must be a tensor of shape {shape} (one entry per token of the logits), "
                                 f"got {got}")
    return m.bool()


def token_weights(mask: Tensor | None, shape: tuple[int, ...], reduction: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(index of real tokens in the flattened (B·L) positions, their weights summing to 1)``."""
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=device)
    mask = mask.to(device)
    if reduction == "token":
        w = mask.float() / mask.sum().clamp_min(1)
    elif reduction == "sequence":
        per_seq = mask.sum(-1, keepdim=True) if mask.dim() == 2 else mask.sum().view(1)
        n_seq = (per_seq > 0).sum().clamp_min(1)
        w = mask.float() / (per_seq.clamp_min(1) * n_seq)
    else:
        raise ValueError(f"reduction must be 'token' or 'sequence', got {reduction!r}")
    flat = mask.reshape(-1)
    idx = flat.nonzero().squeeze(1)
    return idx, w.reshape(-1)[idx]


# ----------------------------------------------------------------------------------------- chunked engine
class _ChunkedTokenLoss(torch.autograd.Function):
    """Σ_k w_k · D(s_k, t_k) over selected rows, computed chunk by chunk with the gradient w.r.t. the
    student rows formed in the forward pass (so no full-vocabulary intermediate outlives a chunk)."""

    @staticmethod
    def forward(ctx: Any, student: Tensor, teacher: Tensor, idx: Tensor, weight: Tensor, fn: Divergence,
                T: float, chunk: int, need_grad: bool) -> Tensor:  # type: ignore[override]
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        grad = torch.zeros_like(student) if need_grad else None
        with torch.autocast(device_type=student.device.type, enabled=False):
            for a in range(0, idx.numel(), chunk):
                rows = idx[a:a + chunk]
                w = weight[a:a + chunk].float()
                s = student.index_select(0, rows).detach().float()
                t = teacher.index_select(0, rows).detach().float() / T
                if need_grad:
                    s.requires_grad_(True)
                with torch.set_grad_enabled(need_grad):
                    val = (fn(s / T, t) * w).sum()
                if need_grad:
                    (g,) = torch.autograd.grad(val, s)
                    assert grad is not None
                    grad.index_copy_(0, rows, g.to(grad.dtype))
                total += val.detach()
        # kept as an attribute, not saved_tensors, so backward can hand the buffer on (scaled in place)
        # as the only reference: no second full-size copy for the product with grad_out
        ctx.grad = grad
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad = ctx.grad
        if grad is None:
            if getattr(ctx, "consumed", False):
                raise RuntimeError("token-level losses support one backward pass per forward (no retain_graph "
                                   "double backward): recompute the loss")
            return (None,) * 8
        ctx.grad, ctx.consumed = None, True
        return (grad.mul_(grad_out.to(grad.dtype)), None, None, None, None, None, None, None)


def chunked_token_loss(student: Tensor, teacher: Tensor, fn: Divergence, ctx: Mapping[str, Any], *, T: float = 1.0,
                       reduction: str = "token", label_shift: int = 1, ignore_index: int = IGNORE_INDEX,
                       chunk_size: int | None = None, name: str = "token loss") -> Tensor:
    """The masked, weighted mean of ``fn`` over real tokens, chunked (see the module docstring)."""
    if student.dim() not in (2, 3):
        raise ShapeMismatchError(f"{name}: logits must be (B, L, V) or (N, V), got student {tuple(student.shape)}; "
                                 f"tap the model's logits (e.g. ':output.logits')")
    if student.shape != teacher.shape:
        if student.shape[:-1] == teacher.shape[:-1]:
            raise ShapeMismatchError(f"{name}: student vocabulary {student.shape[-1]} vs teacher {teacher.shape[-1]}; "
                                     f"token-level distillation needs one tokenizer (and the same vocabulary size) "
                                     f"for both models")
        raise ShapeMismatchError(f"{name}: student logits {tuple(student.shape)} vs teacher {tuple(teacher.shape)}; "
                                 f"feed both models the same batch")
    lead = tuple(student.shape[:-1])
    mask = token_mask(lead, ctx, label_shift, ignore_index, student.device) if student.dim() == 3 else \
        (_as_mask(ctx["token_mask"], lead, "token_mask") if ctx.get("token_mask") is not None else None)
    idx, w = token_weights(mask, lead, reduction, student.device)
    V = student.shape[-1]
    chunk = chunk_size or max(1, CHUNK_ELEMENTS // V)
    need_grad = torch.is_grad_enabled() and student.requires_grad
    if idx.numel() == 0:
        return student.sum() * 0.0
    return _ChunkedTokenLoss.apply(student.reshape(-1, V), teacher.reshape(-1, V), idx, w, fn, float(T), int(chunk),
                                   need_grad)


# ----------------------------------------------------------------------------------------- divergences
def forward_kl(s: Tensor, t: Tensor) -> Tensor:
    """KL(p_t ‖ p_s) per row from logits."""
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def reverse_kl(s: Tensor, t: Tensor) -> Tensor:
    """KL(p_s ‖ p_t) per row from logits."""
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    return (log_s.exp() * (log_s - log_t)).sum(-1)


def generalized_jsd(s: Tensor, t: Tensor, beta: float) -> Tensor:
    """TRL's generalised JSD per row: β·KL(p_t ‖ m) + (1-β)·KL(p_s ‖ m), m = β p_t + (1-β) p_s; the
    forward KL at β = 0 and the reverse KL at β = 1 (TRL's special cases)."""
    if beta == 0:
        return forward_kl(s, t)
    if beta == 1:
        return reverse_kl(s, t)
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    log_m = torch.logsumexp(torch.stack([log_s + math.log(1 - beta), log_t + math.log(beta)]), 0)
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


def skew_kl(s: Tensor, t: Tensor, alpha: float, reverse: bool) -> Tensor:
    """DistiLLM's skew KL per row: KL(p_t ‖ α p_t + (1-α) p_s), or the skew reverse KL
    KL(p_s ‖ (1-α) p_t + α p_s)."""
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    log_a, log_1a = (math.log(alpha) if alpha > 0 else -math.inf), (math.log(1 - alpha) if alpha < 1 else -math.inf)
    if not reverse:
        log_m = torch.logsumexp(torch.stack([log_t + log_a, log_s + log_1a]), 0)
        return (log_t.exp() * (log_t - log_m)).sum(-1)
    log_m = torch.logsumexp(torch.stack([log_t + log_1a, log_s + log_a]), 0)
    return (log_s.exp() * (log_s - log_m)).sum(-1)


def total_variation(s: Tensor, t: Tensor) -> Tensor:
    """½ Σ_v |p_t - p_s| per row."""
    return 0.5 * (F.softmax(t, -1) - F.softmax(s, -1)).abs().sum(-1)


# ----------------------------------------------------------------------------------------- losses
Reduction = Literal["token", "sequence"]


class TokenLoss(DistillLoss):
    """Common options of the token-level losses (see the module docstring)."""

    same_shape = False  # checked here, with a message about vocabularies

    def __init__(self, T: float = 1.0, reduction: Reduction = "token", label_shift: int = 1,
                 ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None) -> None:
        super().__init__()
        if T <= 0:
            raise ValueError(f"{type(self).__name__}: temperature T must be > 0, got {T}")
        if reduction not in ("token", "sequence"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'token' or 'sequence', got {reduction!r}")
        if label_shift < 0:
            raise ValueError(f"{type(self).__name__}: label_shift must be >= 0, got {label_shift}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"{type(self).__name__}: chunk_size must be >= 1 token, got {chunk_size}")
        self.T, self.reduction, self.label_shift = float(T), reduction, label_shift
        self.ignore_index, self.chunk_size = ignore_index, chunk_size

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    scale = 1.0  # a constant factor on the mean (T² for the KL losses)

    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        loss = chunked_token_loss(student, teacher, self.divergence, ctx, T=self.T, reduction=self.reduction,
                                  label_shift=self.label_shift, ignore_index=self.ignore_index,
                                  chunk_size=self.chunk_size, name=self.registry_name)
        return loss * self.scale if self.scale != 1.0 else loss

    registry_name = "token loss"

    def extra_repr(self) -> str:
        return f"T={self.T}, reduction={self.reduction!r}, label_shift={self.label_shift}"


@LOSSES.register("forward_kl")
class ForwardKL(TokenLoss):
    r"""Token-level forward KL — KD (Hinton et al., 2015) applied to every next-token distribution, the
    *word-level KD* of Kim & Rush (*Sequence-Level Knowledge Distillation*, EMNLP 2016):

    .. math:: D = T^2\, \mathrm{KL}\big(\sigma(t_i/T) \,\|\, \sigma(s_i/T)\big)

    Mass-covering: the student spreads probability over everything the teacher allows. ``T=1``
    (the LLM-distillation default: GKD, DistiLLM, MiniLLM); the :math:`T^2` factor is Hinton's (as in
    ``kd``). Equals TRL's ``generalized_jsd_loss`` with ``beta=0`` (times :math:`T^2`) and DistiLLM's
    ``forward_kl`` minus the teacher entropy (a constant; same gradient).
    """

    registry_name = "forward_kl"

    @property
    def scale(self) -> float:  # type: ignore[override]
        return self.T * self.T

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:
        return forward_kl(s, t)


@LOSSES.register("reverse_kl")
class ReverseKL(TokenLoss):
    r"""Token-level reverse KL (Gu, Dong, Wei & Huang, *MiniLLM: Knowledge Distillation of Large Language
    Models*, ICLR 2024 — here per token on a fixed batch, without MiniLLM's policy-gradient sampling):

    .. math:: D = T^2\, \mathrm{KL}\big(\sigma(s_i/T) \,\|\, \sigma(t_i/T)\big)

    Mode-seeking: the student concentrates on the teacher's main modes. Equals TRL's
    ``generalized_jsd_loss`` with ``beta=1`` and DistiLLM's ``reverse_kl`` at ``T=1``.
    """

    registry_name = "reverse_kl"

    @property
    def scale(self) -> float:  # type: ignore[override]
        return self.T * self.T

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:
        return reverse_kl(s, t)


@LOSSES.register("jsd")
class GeneralizedJSD(TokenLoss):
    r"""Generalised Jensen–Shannon divergence of GKD (Agarwal et al., *On-Policy Distillation of Language
    Models: Learning from Self-Generated Mistakes*, ICLR 2024, Eq. 1), as TRL's
    ``GKDTrainer.generalized_jsd_loss``:

    .. math:: D = \beta\,\mathrm{KL}(p_i \,\|\, m_i) + (1-\beta)\,\mathrm{KL}(q_i \,\|\, m_i), \qquad
              m_i = \beta\, p_i + (1-\beta)\, q_i

    with :math:`p = \sigma(t/T)` the teacher, :math:`q = \sigma(s/T)` the student; ``beta=0`` is the
    forward KL and ``beta=1`` the reverse KL (TRL's special cases). ``beta=0.5`` and ``T=1`` are TRL's
    defaults; like TRL there is no :math:`T^2` factor. The mixture is formed in log space
    (``logsumexp``), as TRL does.
    """

    registry_name = "jsd"

    def __init__(self, beta: float = 0.5, T: float = 1.0, reduction: Reduction = "token", label_shift: int = 1,
                 ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None) -> None:
        super().__init__(T, reduction, label_shift, ignore_index, chunk_size)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"jsd: beta must be in [0, 1] (0 = forward KL, 1 = reverse KL), got {beta}")
        self.beta = float(beta)

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:
        return generalized_jsd(s, t, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, {super().extra_repr()}"


@LOSSES.register("skew_kl")
class SkewKL(TokenLoss):
    r"""Skew KL of DistiLLM (Ko, Kim, Chen & Yun, *DistiLLM: Towards Streamlined Distillation for Large
    Language Models*, ICML 2024):

    .. math:: \text{SKL}_\alpha = \mathrm{KL}\big(p_i \,\|\, \alpha p_i + (1-\alpha) q_i\big), \qquad
              \text{SRKL}_\alpha = \mathrm{KL}\big(q_i \,\|\, (1-\alpha) p_i + \alpha q_i\big)
              \;(\texttt{reverse=True})

    ``alpha=0.1`` is the official default (``--skew-alpha``). Skewing keeps the divergence finite and
    its gradient bounded where the student (forward) or teacher (reverse) gives a token almost no
    probability. Deviation: the official ``skewed_forward_kl`` returns the cross-entropy
    :math:`-\sum p \log m` (this KL plus the teacher entropy, a constant for the student: the same
    gradient); here the value is the KL, zero when the student matches the teacher.
    ``skewed_reverse_kl`` matches exactly. ``T`` divides both logits (the official code has none, i.e. 1).
    """

    registry_name = "skew_kl"

    def __init__(self, alpha: float = 0.1, reverse: bool = False, T: float = 1.0, reduction: Reduction = "token",
                 label_shift: int = 1, ignore_index: int = IGNORE_INDEX, chunk_size: int | None = None) -> None:
        super().__init__(T, reduction, label_shift, ignore_index, chunk_size)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"skew_kl: alpha must be in [0, 1], got {alpha}")
        self.alpha, self.reverse = float(alpha), bool(reverse)

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:
        return skew_kl(s, t, self.alpha, self.reverse)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reverse={self.reverse}, {super().extra_repr()}"


@LOSSES.register("tvd")
class TotalVariation(TokenLoss):
    r"""Token-level total variation distance (Wen, Li, Du & Mou, *f-Divergence Minimization for
    Sequence-Level Knowledge Distillation*, ACL 2023; DistiLLM's ``tv_distance``):

    .. math:: D = \tfrac12 \sum_v \big|p_{i,v} - q_{i,v}\big|

    Bounded in [0, 1] and symmetric. Matches DistiLLM's ``tv_distance`` at ``T=1``.
    """

    registry_name = "tvd"

    def divergence(self, s: Tensor, t: Tensor) -> Tensor:
        return total_variation(s, t)


__all__ = ["IGNORE_INDEX", "ForwardKL", "ReverseKL", "GeneralizedJSD", "SkewKL", "TotalVariation", "TokenLoss",
           "chunked_token_loss", "token_mask", "token_weights", "forward_kl", "reverse_kl", "generalized_jsd",
           "skew_kl", "total_variation"]
