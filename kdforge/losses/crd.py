"""Contrastive Representation Distillation (CRD) with its momentum memory banks."""
from __future__ import annotations

import math
from typing import Any, Sequence

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


#: how negatives are drawn when the batch gives no ``contrast_index``
NEGATIVES = ("class", "uniform")


@LOSSES.register("crd")
class CRDLoss(DistillLoss):
    r"""Contrastive Representation Distillation (Tian, Krishnan & Isola, *Contrastive Representation
    Distillation*, ICLR 2020).

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

    Needs ``ctx["index"]`` (N,) dataset indices (wrap the dataset with ``kdforge.data.WithIndex``,
    ``data.with_index: true`` in a run config). Negatives, in order of precedence:

    * ``ctx["contrast_index"]``: (N, K) negative indices, or (N, K+1) with the positive in column 0
      (the official ``CIFAR100InstanceSample`` format), used as given;
    * ``negatives="class"`` (default): K negatives drawn uniformly among the training samples of a
      *different class* than the anchor — the official training recipe (RepDistiller
      ``train_student.py`` builds ``CIFAR100InstanceSample(mode='exact', is_sample=True, k=nce_k)``,
      whose negatives come from ``cls_negative[target]``; the positive is the sample itself). Needs
      each training sample's label: :meth:`set_dataset_labels` (the kdforge trainer calls it with
      the training set's ``targets``);
    * ``negatives="uniform"``: K negatives drawn uniformly from the other ``n_data - 1`` samples
      (what the official ``ContrastMemory`` does when no ``contrast_idx`` is given).

    Deviation: the official dataset draws the K negatives *without* replacement
    (``np.random.choice(..., replace=False)`` when K ≤ the pool); here they are drawn i.i.d. (with
    replacement, as the official ``AliasMethod`` sampler and the NCE derivation assume), which
    vectorises on the device: one ``randint`` per batch into per-class index blocks.

    Defaults (paper/RepDistiller): ``feat_dim=128, nce_k=16384, nce_t=0.07, nce_mom=0.5``;
    ``n_data`` (training-set size) is required. Tap the penultimate (pooled) features; recipe
    weight 0.8 (RepDistiller ``-b 0.8``), usually together with KD.
    """

    same_shape = False
    memory_s: Tensor
    memory_t: Tensor
    z: Tensor
    labels_by_index: Tensor | None
    _class_of: Tensor | None
    _class_order: Tensor | None
    _class_start: Tensor | None
    _class_count: Tensor | None

    def __init__(self, n_data: int | None = None, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_mom: float = 0.5, negatives: str = "class") -> None:
        super().__init__()
        if n_data is None:
            raise ValueError("crd: n_data is required: the number of samples in the training set (the memory "
                             "banks hold one embedding per sample), e.g. loss={'type': 'crd', 'n_data': 50000}")
        check_temperature(nce_t, "nce_t", "crd")
        if n_data < 2 or nce_k < 1 or feat_dim < 1 or nce_t <= 0 or not 0 <= nce_mom < 1:
            raise ValueError(f"crd: need n_data >= 2, nce_k >= 1, feat_dim >= 1, nce_t > 0, 0 <= nce_mom < 1; got "
                             f"n_data={n_data}, nce_k={nce_k}, feat_dim={feat_dim}, nce_t={nce_t}, nce_mom={nce_mom}")
        if negatives not in NEGATIVES:
            raise ValueError(f"crd: negatives must be one of {NEGATIVES} ('class': from other classes, the official "
                             f"recipe; 'uniform': from all other samples), got {negatives!r}")
        self.n_data, self.feat_dim, self.nce_k, self.nce_t, self.nce_mom = n_data, feat_dim, nce_k, nce_t, nce_mom
        self.negatives = negatives
        self.embed_s = Embed(feat_dim)
        self.embed_t = Embed(feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("z", torch.full((2,), -1.0))  # Z for (student-anchor, teacher-anchor) scores
        # the dataset's labels and per-class index blocks (set_dataset_labels): not saved, the trainer sets them
        for name in ("labels_by_index", "_class_of", "_class_order", "_class_start", "_class_count"):
            self.register_buffer(name, None, persistent=False)
        self._labels_checked = False

    # ------------------------------------------------------------------ dataset labels
    def set_dataset_labels(self, labels: Tensor | Sequence[int] | None) -> None:
        """Give the label of every training sample (``labels[i]`` = label of dataset index ``i``;
        length ``n_data``), for ``negatives="class"``. ``None`` means the dataset has no labels: an
        error for ``negatives="class"`` (naming the fix), ignored for ``"uniform"``."""
        if labels is None:
            if self.negatives == "class":
                raise ValueError("crd: negatives='class' (the default, the official recipe) draws each sample's "
                                 "negatives from other classes and needs the label of every training sample, but "
                                 "the training dataset exposes none (no `targets` attribute). Give the dataset a "
                                 "`targets` attribute (one label per sample), call loss.set_dataset_labels(labels), "
                                 "or set negatives: uniform in the crd loss")
            return
        labels = torch.as_tensor(labels).reshape(-1)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"crd: dataset labels must be integer class indices, got dtype {labels.dtype}")
        if labels.numel() != self.n_data:
            raise ValueError(f"crd: n_data={self.n_data} but the training set has {labels.numel()} samples; set the "
                             f"crd loss's n_data: {labels.numel()} (one memory-bank row per training sample)")
        device = self.memory_s.device
        labels = labels.long().to(device)
        classes, class_of = torch.unique(labels, return_inverse=True)
        if self.negatives == "class" and classes.numel() < 2:
            raise ValueError(f"crd: every training sample has label {int(classes[0])}, so there is no sample of "
                             f"another class to draw negatives from; set negatives: uniform")
        count = torch.bincount(class_of, minlength=classes.numel())
        self.labels_by_index, self._class_of = labels, class_of
        self._class_order = torch.argsort(class_of, stable=True)  # dataset indices grouped by class
        self._class_count = count
        self._class_start = torch.cumsum(count, 0) - count
        self._labels_checked = False

    def _class_negatives(self, index: Tensor) -> Tensor:
        """(N, K) indices drawn uniformly (i.i.d.) among the samples whose class differs from each anchor's."""
        if self._class_of is None:
            raise ValueError("crd: negatives='class' needs the label of every training sample: call "
                             "loss.set_dataset_labels(train_dataset.targets) before training (the kdforge trainer "
                             "does it when the training set has `targets`), pass contrast_index=, or set "
                             "negatives: uniform")
        assert self._class_order is not None and self._class_start is not None and self._class_count is not None
        cls = self._class_of[index]
        start, count = self._class_start[cls].unsqueeze(1), self._class_count[cls].unsqueeze(1)
        others = self.n_data - count  # (N, 1) samples of other classes
        # uniform over [0, others): floor(U · others), U float64 (53 random bits; 2× faster than int64 modulo)
        u = torch.rand(index.shape[0], self.nce_k, dtype=torch.float64, device=index.device)
        r = torch.minimum((u * others).long(), others - 1)
        pos = r + (r >= start).long() * count  # skip the anchor's class block in the class-sorted order
        return self._class_order[pos]

    def _check_labels(self, ctx: dict[str, Any], index: Tensor) -> None:
        """Once: the batch's labels agree with the dataset labels at its indices (else the index
        addresses another dataset than the one whose labels were given)."""
        labels = ctx.get("labels")
        if self._labels_checked or self.labels_by_index is None or not isinstance(labels, Tensor) \
                or labels.shape != index.shape or labels.dtype.is_floating_point:
            return
        self._labels_checked = True
        if not torch.equal(self.labels_by_index[index], labels.to(self.labels_by_index.device).long()):
            raise ValueError("crd: the batch's labels differ from the dataset labels at its indices: ctx['index'] does "
                             "not address the dataset whose labels were given to set_dataset_labels (index the "
                             "training set itself, e.g. kdforge.data.WithIndex(train_dataset))")

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
        self._check_labels(ctx, index)
        if given is None and self.negatives == "class":
            return torch.cat([index.unsqueeze(1), self._class_negatives(index)], 1)
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
                f"nce_mom={self.nce_mom}, negatives={self.negatives!r}")
