"""Contrastive Representation Distillation (CRD) with its momentum memory banks."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_temperature
from .relation import flat_pair


class Embed(nn.Module):
    """Linear projection to ``feat_dim`` followed by L2 normalisation; input width inferred lazily."""

    def __init__(self, feat_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.LazyLinear(feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2, dim=1)


def nce_loss(x: Tensor, n_data: int, eps: float = 1e-7) -> Tensor:
    r"""NCE objective (CRD eq. 18) on scores ``x`` of shape (N, 1+K), positive in column 0.

    :math:`-\frac1N\sum_i\big[\log\frac{x_{i0}}{x_{i0}+K P_n} + \sum_{k\ge1}\log\frac{K P_n}{x_{ik}+K P_n}\big]`,
    :math:`P_n = 1/n_{data}` (uniform noise).
    """
    m = x.shape[1] - 1
    mpn = m / float(n_data)
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + mpn + eps))
    log_d0 = torch.log(mpn / (x[:, 1:] + mpn + eps))
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


@LOSSES.register("crd")
class CRDLoss(DistillLoss):
    r"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020).

    Student and teacher features are embedded (``Linear → L2 norm`` to ``feat_dim``; input widths
    read from the first batch). Two memory banks of size ``n_data × feat_dim`` hold momentum
    averages of the student and teacher embeddings of every training sample. For sample :math:`i`
    with positive index :math:`y_i` and negatives :math:`n_1..n_K`:

    .. math::
        h(u, v) = \frac{\exp(u\cdot v/\tau)}{Z}, \qquad
        \mathcal{L} = \mathrm{NCE}\big(h(s_i, M^t_{y_i}), h(s_i, M^t_{n_k})\big)
                    + \mathrm{NCE}\big(h(t_i, M^s_{y_i}), h(t_i, M^s_{n_k})\big)

    both directions, with the NCE objective of :func:`nce_loss` (noise :math:`P_n = 1/n_{data}`).
    As the official code (RepDistiller ``CRDLoss``/``ContrastMemory``): each normalisation constant
    :math:`Z` is estimated once, on the first batch, as ``mean(exp(score/τ)) · n_data`` and then
    kept (a buffer); banks start uniform in ``±1/sqrt(feat_dim/3)``; after the loss, under no_grad,
    ``M[y] ← normalise(mom·M[y] + (1-mom)·embedding)``. Banks are updated only in training mode
    (so evaluation batches do not overwrite them).

    Needs ``ctx["index"]`` (N,) dataset indices (wrap the dataset with ``kdforge.data.WithIndex``).
    Optional ``ctx["contrast_index"]``: (N, K) negative indices, or (N, K+1) with the positive in
    column 0 (the official ``CIFAR100InstanceSample`` format); without it, K negatives are drawn
    uniformly from the other ``n_data - 1`` samples (the official memory draws uniformly from all).

    Defaults (paper/RepDistiller): ``feat_dim=128, nce_k=16384, nce_t=0.07, nce_mom=0.5``;
    ``n_data`` (training-set size) is required. Tap the penultimate (pooled) features; recipe
    weight 0.8 (RepDistiller ``-b 0.8``), usually together with KD.
    """

    same_shape = False
    memory_s: Tensor
    memory_t: Tensor
    z: Tensor

    def __init__(self, n_data: int | None = None, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_mom: float = 0.5) -> None:
        super().__init__()
        if n_data is None:
            raise ValueError("crd: n_data is required: the number of samples in the training set (the memory "
                             "banks hold one embedding per sample), e.g. loss={'type': 'crd', 'n_data': 50000}")
        check_temperature(nce_t, "nce_t", "crd")
        if n_data < 2 or nce_k < 1 or feat_dim < 1 or nce_t <= 0 or not 0 <= nce_mom < 1:
            raise ValueError(f"crd: need n_data >= 2, nce_k >= 1, feat_dim >= 1, nce_t > 0, 0 <= nce_mom < 1; got "
                             f"n_data={n_data}, nce_k={nce_k}, feat_dim={feat_dim}, nce_t={nce_t}, nce_mom={nce_mom}")
        self.n_data, self.feat_dim, self.nce_k, self.nce_t, self.nce_mom = n_data, feat_dim, nce_k, nce_t, nce_mom
        self.embed_s = Embed(feat_dim)
        self.embed_t = Embed(feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))  # Z for (student-anchor, teacher-anchor) scores

    # ------------------------------------------------------------------ indices
    def _index(self, ctx: dict[str, Any], n: int) -> Tensor:
        index = ctx.get("index")
        if index is None:
            raise ValueError("crd: needs the dataset indices of the batch, ctx['index']; wrap your dataset with "
                             "kdforge.data.WithIndex and call distiller(x, labels=y, index=idx)")
        index = torch.as_tensor(index, device=self.memory_s.device).long().reshape(-1)
        if index.numel() != n:
            raise ShapeMismatchError(f"crd: index has {index.numel()} entries for a batch of {n}")
        if index.numel() and (index.min() < 0 or index.max() >= self.n_data):
            raise ValueError(f"crd: index values must lie in [0, n_data={self.n_data}), got "
                             f"[{int(index.min())}, {int(index.max())}]; is n_data the training-set size?")
        return index

    def _contrast(self, ctx: dict[str, Any], index: Tensor) -> Tensor:
        """(N, 1+K) indices, the positive in column 0."""
        n = index.shape[0]
        given = ctx.get("contrast_index")
        if given is None:
            neg = torch.randint(0, self.n_data - 1, (n, self.nce_k), device=index.device)
            neg = neg + (neg >= index.unsqueeze(1)).long()  # uniform over the other samples
            return torch.cat([index.unsqueeze(1), neg], 1)
        given = torch.as_tensor(given, device=index.device).long()
        if given.dim() != 2 or given.shape[0] != n:
            raise ShapeMismatchError(f"crd: contrast_index must be (N, K) negatives for a batch of N={n}, got "
                                     f"shape {tuple(given.shape)}")
        if given.numel() and (given.min() < 0 or given.max() >= self.n_data):
            raise ValueError(f"crd: contrast_index values must lie in [0, n_data={self.n_data})")
        if given.shape[1] > 1 and torch.equal(given[:, 0], index):
            return given  # official format: positive already in column 0
        return torch.cat([index.unsqueeze(1), given], 1)

    # ------------------------------------------------------------------ loss
    def forward(self, student: Tensor, teacher: Tensor, **ctx: Any) -> Tensor:
        s, t = flat_pair(student, teacher, "crd", min_batch=1)
        index = self._index(ctx, s.shape[0])
        idx = self._contrast(ctx, index)
        f_s, f_t = self.embed_s(s), self.embed_t(t.detach())
        dt = torch.promote_types(f_s.dtype, torch.float32)  # at least float32: exp(1/τ) overflows fp16
        w_t = self.memory_t[idx].detach().to(dt)  # (N, 1+K, D)
        w_s = self.memory_s[idx].detach().to(dt)
        out_s = torch.exp(torch.bmm(w_t, f_s.to(dt).unsqueeze(2)).squeeze(2) / self.nce_t)  # student anchor
        out_t = torch.exp(torch.bmm(w_s, f_t.to(dt).unsqueeze(2)).squeeze(2) / self.nce_t)  # teacher anchor
        with torch.no_grad():
            if self.z[0] < 0:
                self.z[0] = out_s.mean() * self.n_data
            if self.z[1] < 0:
                self.z[1] = out_t.mean() * self.n_data
        z = self.z.clone()
        loss = nce_loss(out_s / z[0], self.n_data) + nce_loss(out_t / z[1], self.n_data)
        if self.training:
            self._update(index, f_s.detach(), f_t.detach())
        return loss

    @torch.no_grad()
    def _update(self, index: Tensor, f_s: Tensor, f_t: Tensor) -> None:
        for bank, f in ((self.memory_s, f_s), (self.memory_t, f_t)):
            new = bank[index] * self.nce_mom + f.to(bank.dtype) * (1 - self.nce_mom)
            bank.index_copy_(0, index, F.normalize(new, p=2, dim=1))

    def extra_repr(self) -> str:
        return (f"n_data={self.n_data}, feat_dim={self.feat_dim}, nce_k={self.nce_k}, nce_t={self.nce_t}, "
                f"nce_mom={self.nce_mom}")
