"""Matching Guided Distillation (Yue, Deng & Zhou, ECCV 2020)."""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..connectors.mgd import ONE_TO_ONE, REDUCERS, ChannelReducer, check_reducer
from ..registry import LOSSES
from .base import DistillLoss, ShapeMismatchError, check_rank
from .ft import batch_inputs
from .ofd import ofd_margin



def channel_cost(student: Tensor, teacher: Tensor) -> Tensor:
    """``cost[i, j] = Σ_n (2 - 2·cos(s_n,i , t_n,j))`` over the batch, channels as vectors over positions."""
    n, c_s = student.shape[:2]
    s = F.normalize(student.reshape(n, c_s, -1).float(), dim=2)
    t = F.normalize(teacher.reshape(n, teacher.shape[1], -1).float(), dim=2)
    return (2 - 2 * torch.bmm(s, t.transpose(1, 2))).sum(0)


def solve_matching(cost: np.ndarray | Tensor, groups: int) -> Tensor:
    """Assign each student channel ``groups`` distinct teacher channels minimising the total cost.

    As the official code: the (C_s, C_t) cost matrix is stacked ``groups`` times and solved as one
    linear assignment (here with ``scipy.optimize.linear_sum_assignment``). Returns a
    ``(groups, C_s)`` index tensor: ``out[g, i]`` is the g-th teacher channel of student channel i.
    """
    from scipy.optimize import linear_sum_assignment  # imported here: 0.5 s of start-up `import kdforge` need not pay

    cost = cost.detach().cpu().double().numpy() if isinstance(cost, Tensor) else np.asarray(cost, dtype=float)
    c_s, c_t = cost.shape
    if groups * c_s > c_t:
        raise ValueError(f"mgd: cannot give {c_s} student channels {groups} teacher channels each from {c_t}")
    rows, cols = linear_sum_assignment(np.tile(cost, (groups, 1)))
    out = np.empty(groups * c_s, dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out).view(groups, c_s)


@LOSSES.register("mgd")
class MGDLoss(DistillLoss):
    r"""Matching Guided Distillation (Yue, Deng & Zhou, *Matching Guided Distillation*, ECCV 2020).

    Teacher channels are matched to student channels by a linear assignment on the channel-wise
    distance :math:`d_{ij} = \mathbb{E}_x[2 - 2\cos(s_i, t_j)]` (channels as vectors over spatial
    positions), estimated over a pass of data (:meth:`update_matching`, refreshed every
    ``update_freq``\ =2 epochs in the paper's ImageNet recipe). With :math:`C_t = G\,C_s + r`
    teacher channels each student channel gets a group of :math:`G` teacher channels; a reducer
    turns each group into one target channel:

    ``amp``  absolute max pooling: per position, the group member of largest absolute value (default);
    ``rd``   random drop: per position, a random member of the group, redrawn at every call;
    ``sp``   simple pooling: per position, the maximum of the group;
    ``sm``   sparse matching: one teacher channel per student channel (a one-to-one assignment, the
             official ``SMDistiller``), the other teacher channels are ignored.

    The names are exactly the official ``--mgd-reducer`` values (``sp`` is *not* sparse matching).

    The loss is OFD's partial L2 on pre-ReLU features with the teacher's margin
    :math:`m_c = E[t_c \mid t_c<0]` (:func:`~kdforge.losses.ofd.ofd_margin` of the teacher BN at the
    tap, or of the BN named by ``teacher_bn``):

    .. math:: \hat t = \max(R(t), m),\quad \mathcal{L} = \frac1N\sum \mathbb{1}[\hat s > \hat t \,\vee\, \hat t > 0]
              \,(\hat s - \hat t)^2,\quad \hat s = \mathrm{BN}(s)

    where BN is a learnable BatchNorm on the student feature (the official ``self.BNs``).
    Tap pre-ReLU features on both sides (BN outputs, e.g. ``layer3.1.bn2``).

    Following the official code (``mgd/builder.py``, ``main.py``): the margin of a group is the
    mean of its members' margins (``amp``), a random member's margin drawn per channel
    independently of the feature draw (``rd``), the group's maximum margin (``sp``, whose target is
    ``adaptive_max_pool3d`` over the group as ``MGDistiller.sp``); the loss is a sum divided by the batch size and
    the official weight is ``1/loss_factor`` = 1e-4 (ImageNet, 224 px), with the stage i of K
    further divided by 2^(K-i-1) (one mgd job per stage in kdforge). The classification
    ``builder.py`` takes ``argmax(t)``; we take ``argmax(|t|)`` as the paper and the official
    self-supervised builder do. When :math:`r > 0` the official code keeps only the first
    :math:`G C_s` teacher channels as candidates ("shave"); the solver here chooses among all.
    Without any BN the margin is the empirical per-channel mean of the negative teacher values
    seen by the matching pass (a kdforge fallback).
    """

    same_shape = False
    needs_teacher_model = True  # the matching pass runs the teacher

    def __init__(self, reducer: str = "amp", student_bn: bool = True, update_freq: int = 2,
                 max_samples: int | None = 20000, auto_init: bool = True, teacher_bn: str | None = None) -> None:
        super().__init__()
        self.reducer = check_reducer(reducer, "mgd")
        self.update_freq, self.max_samples, self.auto_init = update_freq, max_samples, auto_init
        self.teacher_bn = teacher_bn
        self.bn: nn.Module = nn.LazyBatchNorm2d() if student_bn else nn.Identity()
        self.reducer_module = ChannelReducer(self.reducer)
        self.register_buffer("matching", torch.empty(0, 0, dtype=torch.long))
        self.register_buffer("margin", torch.empty(0))
        self._refs: tuple[nn.Module, nn.Module, str, str] | None = None  # plain tuple: not submodules

    # -- setup and matching ----------------------------------------------------------------------
    def setup(self, student: nn.Module, teachers: Sequence[nn.Module], student_taps: Sequence[str],
              teacher_taps: Sequence[str]) -> None:
        """Keep the models and taps for :meth:`update_matching`; margin from the teacher's tapped BN."""
        if len(teachers) != 1 or len(student_taps) != 1 or len(teacher_taps) != 1:
            raise ValueError(f"mgd: a job needs exactly one teacher, one student tap and one teacher tap (got "
                             f"{len(teachers)} teachers, taps {list(student_taps)} / {list(teacher_taps)}); "
                             f"make one mgd job per stage (weight stage i of K by 1/2^(K-i-1) as the paper)")
        self._refs = (student, teachers[0], student_taps[0], teacher_taps[0])
        from ..capture import TapSpec, resolve_module

        if self.teacher_bn is not None:
            self.set_margin(ofd_margin(resolve_module(teachers[0], self.teacher_bn)))
            return
        spec = TapSpec.parse(teacher_taps[0])
        if spec.kind == "output":
            module = resolve_module(teachers[0], spec.path)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                self.set_margin(ofd_margin(module))

    def set_margin(self, margin: Tensor) -> None:
        """Set the per-teacher-channel margin (e.g. ``ofd_margin(teacher.layer3[1].bn2)``)."""
        self.margin = margin.detach().reshape(-1).float().to(self.margin.device)

    def groups(self, c_s: int, c_t: int) -> int:
        if c_s > c_t:
            raise ShapeMismatchError(f"mgd: the student has more channels ({c_s}) than the teacher ({c_t}); MGD "
                                     f"matches every student channel to teacher channels: tap a wider teacher layer, "
                                     f"or add a connector mapping the student to at most {c_t} channels")
        return 1 if self.reducer in ONE_TO_ONE else c_t // c_s

    def update_matching_from_features(self, student_feats: Tensor | Iterable[Tensor],
                                      teacher_feats: Tensor | Iterable[Tensor]) -> Tensor:
        """Recompute the matching from collected (student, teacher) feature batches; returns it."""
        s_list = [student_feats] if isinstance(student_feats, Tensor) else list(student_feats)
        t_list = [teacher_feats] if isinstance(teacher_feats, Tensor) else list(teacher_feats)
        if len(s_list) != len(t_list) or not s_list:
            raise ValueError(f"mgd: need as many student as teacher batches (got {len(s_list)} and {len(t_list)})")
        acc = _CostAccumulator()
        for s, t in zip(s_list, t_list):
            acc.add(s, t)
        return self._finish(acc)

    def on_epoch_start(self, epoch: int, loader: Iterable[Any]) -> None:
        """Refresh the matching every ``update_freq`` epochs (epoch 0 included) from ``loader``."""
        if self.update_freq and epoch % self.update_freq == 0:
            self.update_matching(loader)

    def update_matching(self, loader: Iterable[Any], max_samples: int | None = -1) -> Tensor:
        """Run student and teacher (eval, no grad) over ``loader`` and recompute the matching.

        Needs :meth:`setup` (the Distiller calls it). Stops after ``max_samples`` images (default:
        the constructor's, 20000 as the official ImageNet pass; ``None`` = whole loader).
        """
        if self._refs is None:
            raise RuntimeError("mgd: update_matching needs the models: the Distiller calls "
                               "loss.setup(student, teachers, student_taps, teacher_taps); call it yourself, or use "
                               "update_matching_from_features(student_feats, teacher_feats)")
        from ..capture import Tapper
        from ..placement import placement_of, to_placement

        limit = self.max_samples if max_samples == -1 else max_samples
        student, teacher, s_tap, t_tap = self._refs
        modes = (student.training, teacher.training)
        device = next(iter(student.parameters()), torch.empty(0)).device
        s_tapper, t_tapper = Tapper(student, [s_tap]), Tapper(teacher, [t_tap])
        s_at, t_at = placement_of(student), placement_of(teacher)
        acc, seen = _CostAccumulator(), 0
        try:
            student.eval()
            teacher.eval()
            with torch.no_grad():
                for batch in loader:
                    x = batch_inputs(batch)
                    x = x.to(device) if isinstance(x, Tensor) else x
                    with s_tapper.record() as s_rec:
                        student(x)
                        s = s_rec[s_tap]
                    with t_tapper.record() as t_rec:  # the teacher may run in another dtype / on another device
                        teacher(to_placement(x, t_at.device, t_at.dtype) if t_at is not None else x)
                        t = t_rec[t_tap]
                    if s_at is not None:
                        t = to_placement(t, s_at.device, s_at.dtype)
                    acc.add(s, t)
                    seen += s.shape[0]
                    if limit is not None and seen >= limit:
                        break
        finally:
            s_tapper.close()
            t_tapper.close()
            student.train(modes[0])
            teacher.train(modes[1])
        return self._finish(acc)

    def _finish(self, acc: "_CostAccumulator") -> Tensor:
        if acc.cost is None:
            raise ValueError("mgd: the matching pass saw no data; give a non-empty loader or feature list")
        c_s, c_t = acc.cost.shape
        matching = solve_matching(acc.cost / acc.count, self.groups(c_s, c_t))
        self.matching = matching.to(self.matching.device)
        if self.margin.numel() == 0:
            self.set_margin(acc.empirical_margin())
        return self.matching

    # -- loss ------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:  # type: ignore[no-untyped-def]
        for name in ("matching", "margin"):  # buffers whose size is only known after matching
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def reduce(self, teacher: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher (N, C_t, H, W) → (target (N, C_s, H, W), margin (C_s,)) with the chosen reducer."""
        return self.reducer_module(teacher, self.matching, self.margin)

    def forward(self, student: Tensor, teacher: Tensor, **ctx: object) -> Tensor:
        check_rank(student, (4,), "student feature", "mgd")
        check_rank(teacher, (4,), "teacher feature", "mgd")
        if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
            raise ShapeMismatchError(f"mgd: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} must "
                                     f"share batch and spatial size (MGD compares positions one to one); tap layers "
                                     f"of equal resolution")
        c_s, c_t = student.shape[1], teacher.shape[1]
        groups = self.groups(c_s, c_t)
        if self.matching.numel() == 0:
            if not self.training:  # a dry run / evaluation: provisional, the first epoch's pass replaces it
                self.update_matching_from_features(student.detach(), teacher.detach())
            elif not self.auto_init:
                raise RuntimeError("mgd: no channel matching yet; call loss.update_matching(loader) before training")
            else:
                warnings.warn("mgd: no matching yet, initialising it from this batch; call loss.update_matching(loader) "
                              "before training (and every update_freq epochs) for the paper's matching pass",
                              stacklevel=2)
                self.update_matching_from_features(student.detach(), teacher.detach())
        if self.matching.shape != (groups, c_s) or int(self.matching.max()) >= c_t or self.margin.numel() != c_t:
            raise ShapeMismatchError(f"mgd: the matching {tuple(self.matching.shape)} / margin ({self.margin.numel()}) "
                                     f"was computed for other channels than student {c_s} / teacher {c_t} "
                                     f"({groups} per student channel); call update_matching again")
        s = self.bn(student)
        t, m = self.reduce(teacher.detach())
        target = torch.maximum(t, m.view(1, -1, 1, 1))
        mask = ((s > target) | (target > 0)).to(s.dtype)
        return ((s - target).pow(2) * mask).sum() / student.shape[0]


class _CostAccumulator:
    """Running channel-distance sums and the teacher's negative-part statistics."""

    def __init__(self) -> None:
        self.cost: Tensor | None = None
        self.count = 0
        self.neg_sum: Tensor | None = None
        self.neg_count: Tensor | None = None

    def add(self, student: Tensor, teacher: Tensor) -> None:
        check_rank(student, (4,), "student feature", "mgd matching")
        check_rank(teacher, (4,), "teacher feature", "mgd matching")
        if student.shape[0] != teacher.shape[0] or student.shape[2:] != teacher.shape[2:]:
            raise ShapeMismatchError(f"mgd matching: student {tuple(student.shape)} and teacher "
                                     f"{tuple(teacher.shape)} must share batch and spatial size")
        if self.cost is not None and self.cost.shape != (student.shape[1], teacher.shape[1]):
            raise ShapeMismatchError(f"mgd matching: channel counts changed between batches "
                                     f"({tuple(self.cost.shape)} vs {student.shape[1]}, {teacher.shape[1]})")
        cost = channel_cost(student.detach(), teacher.detach()).double().cpu()
        t = teacher.detach().double().transpose(0, 1).reshape(teacher.shape[1], -1).cpu()
        neg_sum, neg_count = t.clamp(max=0).sum(1), (t < 0).sum(1).double()
        if self.cost is None:
            self.cost, self.neg_sum, self.neg_count = cost, neg_sum, neg_count
        else:
            self.cost += cost
            self.neg_sum += neg_sum  # type: ignore[operator]
            self.neg_count += neg_count  # type: ignore[operator]
        self.count += student.shape[0]

    def empirical_margin(self) -> Tensor:
        assert self.neg_sum is not None and self.neg_count is not None
        return (self.neg_sum / self.neg_count.clamp(min=1)).float()


__all__ = ["MGDLoss", "channel_cost", "solve_matching", "REDUCERS"]
