"""Factor Transfer (Kim et al., NeurIPS 2018): paraphraser, translator, loss and pre-training step."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..connectors.ft import Paraphraser, Translator, factor_channels
from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_rank

FeatureSource = Iterable[Tensor] | Callable[[], Iterable[Tensor]]


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    # attribute assignment also works on lazy (uninitialised) parameters and survives materialisation
    for p in module.parameters():
        p.requires_grad = flag


def batch_inputs(batch: Any) -> Any:
    """The model input of a loader batch: ``x`` of ``(x, y, ...)``, ``batch['input'|'image']``, or ``batch``."""
    if isinstance(batch, (list, tuple)):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "image", "images", "img"):
            if key in batch:
                return batch[key]
        raise KeyError(f"cannot find the model input in a batch with keys {list(batch)}; "
                       f"expected one of 'input', 'inputs', 'image', 'images', 'img'")
    return batch


def pretrain_paraphraser(paraphraser: Paraphraser, features: FeatureSource, epochs: int = 5, lr: float = 0.1,
                         momentum: float = 0.9, weight_decay: float = 5e-4, rec_loss: str = "l1") -> list[float]:
    """Train ``paraphraser`` to reconstruct teacher features; returns the mean loss of each epoch.

    ``features`` is a re-iterable of teacher feature tensors (a list) or a callable returning a fresh
    iterable per epoch (a generator over a loader). Defaults follow the author's
    ``train_Paraphraser.py``: SGD(lr 0.1, momentum 0.9, weight decay 5e-4), ``nn.L1Loss`` between the
    reconstruction and the feature (``rec_loss='l1'``; the paper writes an L2 loss, available as
    ``'l2'``; RepDistiller uses MSE), 5 epochs. The paraphraser ends in eval mode with the
    ``requires_grad`` flags it had before.
    """
    if rec_loss not in ("l1", "l2"):
        raise ValueError(f"pretrain_paraphraser: rec_loss must be 'l1' or 'l2', got {rec_loss!r}")
    criterion = F.l1_loss if rec_loss == "l1" else F.mse_loss

    def epoch_features() -> Iterator[Tensor]:
        src = features() if callable(features) else features
        yield from src

    flags = [p.requires_grad for p in paraphraser.parameters()]
    _set_requires_grad(paraphraser, True)
    optimizer: torch.optim.Optimizer | None = None
    history: list[float] = []
    paraphraser.train()
    try:
        for epoch in range(epochs):
            total, count = 0.0, 0
            for feat in epoch_features():
                feat = feat.detach()
                if optimizer is None:  # materialise the lazy layers before building the optimizer
                    check_rank(feat, (4,), "teacher feature", "pretrain_paraphraser")
                    with torch.no_grad():
                        paraphraser.reconstruct(feat[:1])
                    optimizer = torch.optim.SGD(paraphraser.parameters(), lr=lr, momentum=momentum,
                                                weight_decay=weight_decay)
                loss = criterion(paraphraser.reconstruct(feat), feat)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            if count == 0:
                raise ValueError(f"pretrain_paraphraser: no features in epoch {epoch}; pass a list or a callable "
                                 f"that returns a fresh iterable each epoch (a generator is exhausted after one)")
            history.append(total / count)
        if isinstance(getattr(paraphraser, "trained", None), Tensor):
            paraphraser.trained.fill_(True)
    finally:
        for p, f in zip(paraphraser.parameters(), flags):
            p.requires_grad = f
        paraphraser.eval()
    return history


@LOSSES.register("ft")
class FTLoss(DistillLoss):
    r"""Factor Transfer (Kim, Park & Kwak, *Paraphrasing Complex Network: Network Compression via
    Factor Transfer*, NeurIPS 2018).

    .. math:: \mathcal{L}_{FT} = \Big\| \frac{F_S}{\|F_S\|_2} - \frac{F_T}{\|F_T\|_2} \Big\|_p,\qquad p = 1

    with :math:`F_T = P_{enc}(t)` the teacher factor from a pre-trained, frozen :class:`Paraphraser`
    and :math:`F_S = T(s)` the student factor from a trainable :class:`Translator`; factors are
    flattened per sample and L2-normalised. Factor rate ``k=0.5``. As in the author's code
    (``nn.L1Loss`` on ``utils.FT``) the L1 distance is *averaged* over batch and elements, and the
    loss weight is β=500 (``--beta``); use ``weight: 500`` in the job.

    The paraphraser must be pre-trained on teacher features first: :meth:`pretrain` (teacher +
    tap + loader) or :func:`pretrain_paraphraser` (features). It stays frozen (``requires_grad``
    False, eval mode); only the translator's parameters train. Spatial sizes that differ are
    average-pooled to the smaller one (RepDistiller) when ``resize=True``, else rejected.
    """

    same_shape = False

    def __init__(self, k: float = 0.5, p: int = 1, resize: bool = True, paraphraser: Paraphraser | None = None) -> None:
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"ft: p must be 1 or 2, got {p}")
        self.k, self.p, self.resize = k, p, resize
        self.translator = Translator(k)
        self.paraphraser = paraphraser if paraphraser is not None else Paraphraser(k)
        _set_requires_grad(self.paraphraser, False)
        self.paraphraser.eval()
        self._warned = False

    def train(self, mode: bool = True) -> "FTLoss":
        super().train(mode)
        self.paraphraser.eval()  # frozen: never leaves eval mode
        return self

    @property
    def pretrained(self) -> bool:
        return bool(self.paraphraser.trained)

    def pretrain(self, teacher: nn.Module, tap: str, loader: Iterable[Any], epochs: int = 5, lr: float = 0.1,
                 **kwargs: Any) -> list[float]:
        """Pre-train the paraphraser on ``teacher``'s feature at ``tap`` over ``loader``; per-epoch losses."""
        from ..capture import Tapper
        from ..placement import placement_of, to_placement

        was_training = teacher.training
        teacher.eval()
        # the teacher may run in another dtype / on another device than the paraphraser (the student's side)
        t_at, p_at = placement_of(teacher), placement_of(self.paraphraser)

        def features() -> Iterator[Tensor]:
            tapper = Tapper(teacher, [tap])
            try:
                for batch in loader:
                    x = batch_inputs(batch)
                    with torch.no_grad(), tapper.record() as rec:
                        teacher(to_placement(x, t_at.device, t_at.dtype) if t_at is not None else x)
                        feat = rec[tap]
                    yield to_placement(feat, p_at.device, p_at.dtype) if p_at is not None else feat
            finally:
                tapper.close()

        try:
            history = pretrain_paraphraser(self.paraphraser, features, epochs=epochs, lr=lr, **kwargs)
        finally:
            teacher.train(was_training)
        _set_requires_grad(self.paraphraser, False)
        return history

    def factors(self, student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        """Flattened, L2-normalised (student, teacher) factors; the teacher's carries no gradient."""
        check_rank(student, (4,), "student feature", "ft")
        check_rank(teacher, (4,), "teacher feature", "ft")
        if student.shape[0] != teacher.shape[0]:
            raise ShapeMismatchError(f"ft: batch sizes differ: student {tuple(student.shape)} vs teacher "
                                     f"{tuple(teacher.shape)}; feed both the same batch")
        if student.shape[2:] != teacher.shape[2:]:
            if not self.resize:
                raise ShapeMismatchError(f"ft: spatial sizes differ: student {tuple(student.shape)} vs teacher "
                                         f"{tuple(teacher.shape)}; tap layers of equal resolution or set resize=True")
            s_hw, t_hw = student.shape[2:], teacher.shape[2:]
            if s_hw[0] * s_hw[1] > t_hw[0] * t_hw[1]:
                student = F.adaptive_avg_pool2d(student, tuple(t_hw))
            else:
                teacher = F.adaptive_avg_pool2d(teacher, tuple(s_hw))
        self.translator.bind_once(student.shape, teacher.shape)
        self.paraphraser.bind_once(teacher.shape, teacher.shape)
        with torch.no_grad():
            f_t = self.paraphraser(teacher.detach())
        f_s = self.translator(student)
        return F.normalize(f_s.flatten(1), dim=1), F.normalize(f_t.flatten(1), dim=1)

    def forward(self, student: Tensor, teacher: Tensor, **ctx: object) -> Tensor:
        if not bool(self.paraphraser.trained) and not self._warned:
            self._warned = True
            warnings.warn("ft: the paraphraser has not been pre-trained; call loss.pretrain(teacher, tap, loader) "
                          "or pretrain_paraphraser(loss.paraphraser, features) before distilling", stacklevel=2)
        f_s, f_t = self.factors(student, teacher)
        diff = f_s - f_t
        return diff.abs().mean() if self.p == 1 else diff.pow(2).mean()


__all__ = ["Paraphraser", "Translator", "FTLoss", "pretrain_paraphraser", "factor_channels", "batch_inputs"]
