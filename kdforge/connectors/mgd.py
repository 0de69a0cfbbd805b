"""MGD's channel reducers (Yue et al., ECCV 2020), registered as ``mgd_reducer`` (the loss is
:class:`kdforge.losses.mgd.MGDLoss`).

The names are the official code's (``--mgd-reducer`` of ``cls/main_mgd.py``, ``mgd/builder.py``),
so a recipe ported from it trains the same loss:

``amp``  absolute max pooling: per position, the group member of largest absolute value; margin =
         mean of the group's margins (``MGDistiller.amp``).
``rd``   random drop: per position, a random group member, redrawn at every call; margin = a random
         member's per channel, drawn independently (``MGDistiller.rd``).
``sp``   simple pooling: per position, the *maximum* of the group (``adaptive_max_pool3d`` over the
         group, the kernel the official ``MGDistiller.sp`` uses); margin = the group's maximum.
``sm``   sparse matching: one teacher channel per student channel (a one-to-one assignment), the
         other teacher channels are ignored (``SMDistiller.sm``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..registry import CONNECTORS
from .base import Connector

#: ``(t (N, G, C_s, H, W), margin (G, C_s)) -> (target (N, C_s, H, W), margin (C_s,))``
ReduceFn = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]


def _amp(t: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    idx = t.abs().argmax(dim=1, keepdim=True)
    return t.gather(1, idx).squeeze(1), m.mean(0)


def _rd(t: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    n, g, c_s, h, w = t.shape
    idx = torch.randint(0, g, (n, 1, c_s, h, w), device=t.device)
    m_idx = torch.randint(0, g, (1, c_s), device=t.device)
    return t.gather(1, idx).squeeze(1), m.gather(0, m_idx).squeeze(0)


def _sp(t: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    return t.amax(dim=1), m.amax(dim=0)


def _sm(t: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    if t.shape[1] != 1:
        raise ValueError(f"mgd_reducer 'sm' (sparse matching) needs a one-to-one matching (1, C_s), got "
                         f"{t.shape[1]} teacher channels per student channel; recompute the matching with "
                         f"reducer 'sm'")
    return t[:, 0], m[0]


#: reducer name (the official code's) → reduce function
REDUCERS: dict[str, ReduceFn] = {"amp": _amp, "rd": _rd, "sp": _sp, "sm": _sm}
#: reducers whose matching gives each student channel exactly one teacher channel
ONE_TO_ONE = frozenset({"sm"})


def check_reducer(reducer: str, owner: str) -> str:
    """``reducer`` if it is one of :data:`REDUCERS`, else a ValueError listing them (with their meaning)."""
    if reducer not in REDUCERS:
        raise ValueError(f"{owner}: unknown reducer {reducer!r}; use one of the official MGD names: amp (absolute "
                         f"max pooling), rd (random drop), sp (simple pooling: max over the group), sm (sparse "
                         f"matching: one teacher channel per student channel)")
    return reducer


@CONNECTORS.register("mgd_reducer")
class ChannelReducer(Connector):
    """MGD's channel reducer: teacher (N, C_t, H, W) → (N, C_s, H, W) by a ``matching`` (G, C_s) of
    teacher channel indices (``matching[g, i]``: the g-th teacher channel of student channel i), and the
    per-teacher-channel margins (C_t,) → (C_s,), with one of the official reducers ``amp``, ``rd``,
    ``sp``, ``sm`` (see the module docstring). Parameter-free."""

    def __init__(self, reducer: str = "amp") -> None:
        super().__init__()
        self.reducer = check_reducer(reducer, "mgd_reducer")

    def forward(self, teacher: Tensor, matching: Tensor, margin: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        g, c_s = matching.shape
        n, _, h, w = teacher.shape
        t = teacher[:, matching.flatten()].view(n, g, c_s, h, w)
        m = margin.to(teacher.dtype)[matching]  # (G, C_s)
        return REDUCERS[self.reducer](t, m)

    def extra_repr(self) -> str:
        return f"reducer={self.reducer!r}"


__all__ = ["ChannelReducer", "REDUCERS", "ONE_TO_ONE", "check_reducer"]
