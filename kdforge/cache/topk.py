r"""Top-k teacher logits with a renormalised tail, and the error bound they come with.

Storing only the ``k`` largest of ``C`` logits per sample shrinks a cache ``C/k``-fold (ImageNet:
1000 → 5 or 10, as FKD's soft labels). kdforge also stores each row's log-sum-exp
:math:`\ell = \log\sum_{i=1}^{C} e^{z_i}` (one float32), and rebuilds full logits :math:`\tilde z` for
the losses as

.. math::
    \tilde z_i = z_i \;(i \in \text{top-}k), \qquad
    \tilde z_j = \log\frac{e^{\ell} - \sum_{i \in \text{top-}k} e^{z_i}}{C - k} \;(j \notin \text{top-}k),

i.e. the tail's probability mass at temperature 1 is kept exactly and spread uniformly over the
``C - k`` other classes (renormalisation: the rebuilt softmax sums to one with the top-k
probabilities unchanged at :math:`T = 1`). The fill never exceeds the k-th logit, so the top-k order
and the argmax are unchanged.

**Bound.** Losses flagged ``teacher_via_softmax`` (KD, DKD, DIST) see the teacher only through
:math:`p_T = \mathrm{softmax}(z/T)`. With :math:`\varepsilon_T` / :math:`\tilde\varepsilon_T` the tail
masses of :math:`p_T` / :math:`\tilde p_T` (:math:`A_T = \sum_{top} e^{z_i/T}`, :math:`B = e^{\ell}-\sum_{top} e^{z_i}`):

.. math::
    \|\tilde p_T - p_T\|_1 \le 2\,\delta_T, \qquad
    \delta_T = \max\Big(\tilde\varepsilon_T,\; \frac{B^{1/T}}{A_T + B^{1/T}}\Big) \;\ge\; \max(\varepsilon_T, \tilde\varepsilon_T),

(top-k entries differ by :math:`|\varepsilon_T - \tilde\varepsilon_T|` in total, tail entries by at most
:math:`\varepsilon_T + \tilde\varepsilon_T`; for :math:`T \ge 1` the power-mean inequality gives
:math:`\varepsilon_T \le \tilde\varepsilon_T`, for :math:`T < 1` :math:`\sum_{tail} e^{z_j/T} \le B^{1/T}`).
Everything in :math:`\delta_T` is known from the cache, so :func:`softlabel_bound` computes it.
For KD (Hinton, :math:`T^2\,\mathrm{KL}(p_T\,\|\,q_T)`, :math:`q_T` the student's softmax) per sample:

.. math::
    |\mathrm{KD}(\tilde z) - \mathrm{KD}(z)| \le T^2\Big[\delta_T \log(C-1) + h(\delta_T)
        + \delta_T\,\big(\max_i \log q_{T,i} - \min_i \log q_{T,i}\big)\Big],

the first two terms the entropy difference (Audenaert's continuity bound, :math:`h` the binary
entropy, :math:`h(\delta) = \log 2` for :math:`\delta > 1/2`), the last the cross term
:math:`\sum_i (\tilde p_i - p_i)\log q_i`. The gradient of KD with respect to the student's logits,
:math:`T (q_T - p_T)/N`, moves by at most :math:`2 T \delta_T / N` in L1 per sample.
:func:`kd_bound` returns the batch-mean loss bound; the tests check cached top-k KD against it and
the soft labels of KD/DKD/DIST against :func:`softlabel_bound`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def compress(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(values (N, k), indices (N, k), lse (N,) float32)`` of 2-D logits ``(N, C)``."""
    z = logits.float()
    values, indices = z.topk(k, dim=1)
    return values, indices, torch.logsumexp(z, dim=1)


def _tail_log_mass(values: Tensor, lse: Tensor) -> Tensor:
    """``log(e^lse - sum e^values)`` per row, in float64, floored so it stays finite."""
    v, l = values.double(), lse.double()
    top = torch.exp(v - l[:, None]).sum(1)  # top-k mass at T = 1 (<= 1 up to storage rounding)
    return l + torch.log1p(-top.clamp(max=1.0 - 1e-15))


def restore(values: Tensor, indices: Tensor, lse: Tensor, num_classes: int) -> Tensor:
    """Full ``(N, C)`` float32 logits from top-k values/indices and the row log-sum-exp (module docstring)."""
    n, k = values.shape
    if k >= num_classes:
        return torch.zeros(n, num_classes).scatter_(1, indices.long(), values.float())
    fill = _tail_log_mass(values, lse) - math.log(num_classes - k)
    fill = torch.minimum(fill, values.double().min(1).values)  # never above the k-th logit
    out = fill.float()[:, None].expand(n, num_classes).clone()
    return out.scatter_(1, indices.long(), values.float())


def softlabel_bound(values: Tensor, lse: Tensor, num_classes: int, T: float) -> Tensor:
    r"""Per-sample :math:`\delta_T`: ``||softmax(z̃/T) - softmax(z/T)||_1 <= 2 δ_T`` (module docstring)."""
    k = values.shape[1]
    if k >= num_classes:
        return torch.zeros(values.shape[0], dtype=torch.float64)
    v = values.double()
    log_b = _tail_log_mass(values, lse)  # log B
    fill = torch.minimum(log_b - math.log(num_classes - k), v.min(1).values)
    log_a = torch.logsumexp(v / T, 1)
    log_tail_rebuilt = math.log(num_classes - k) + fill / T
    eps_rebuilt = torch.sigmoid(log_tail_rebuilt - log_a)  # B̃_T / (A_T + B̃_T)
    eps_lumped = torch.sigmoid(log_b / T - log_a)           # B^(1/T) / (A_T + B^(1/T))
    return torch.maximum(eps_rebuilt, eps_lumped)


def kd_bound(student: Tensor, values: Tensor, lse: Tensor, num_classes: int, T: float) -> float:
    """Bound on ``|KD(student, restored) - KD(student, true logits)|`` for the batch-mean KD loss."""
    d = softlabel_bound(values, lse, num_classes, T).clamp(max=1.0)
    h = torch.where(d > 0.5, torch.full_like(d, math.log(2.0)),
                    -(d * d.clamp_min(1e-300).log() + (1 - d) * (1 - d).clamp_min(1e-300).log()))
    log_q = torch.log_softmax(student.double() / T, 1)
    spread = log_q.max(1).values - log_q.min(1).values
    entropy = (d * math.log(max(num_classes - 1, 1)) + h).clamp(max=math.log(num_classes))  # |H(p̃) - H(p)| <= log C
    per = entropy + d * spread
    return float(per.mean() * T * T)


__all__ = ["compress", "kd_bound", "restore", "softlabel_bound"]
