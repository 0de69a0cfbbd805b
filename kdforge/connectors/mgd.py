"""MGD's channel reducer (Yue et al., ECCV 2020), registered as ``mgd_reducer`` (the loss is
:class:`kdforge.losses.mgd.MGDLoss`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ..registry import CONNECTORS
from .base import Connector

#: teacher-channel reducers: abs-max pooling, random pick, sparse (first member); ``sm`` = ``sp``
REDUCERS = ("amp", "rd", "sp", "sm")


@CONNECTORS.register("mgd_reducer")
class ChannelReducer(Connector):
    """MGD's channel reducer: teacher (N, C_t, H, W) → (N, C_s, H, W) by a ``matching`` (G, C_s) of
    teacher channel indices: ``amp`` keeps per position the group member of largest absolute value,
    ``rd`` a random member, ``sp`` only the first (sparse matching). Also reduces the per-channel
    margins (mean over the group for ``amp``, as the official code). Parameter-free."""

    def __init__(self, reducer: str = "amp") -> None:
        super().__init__()
        if reducer not in REDUCERS:
            raise ValueError(f"mgd_reducer: unknown reducer {reducer!r}; use one of {REDUCERS}")
        self.reducer = "sp" if reducer == "sm" else reducer

    def forward(self, teacher: Tensor, matching: Tensor, margin: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        g, c_s = matching.shape
        n, _, h, w = teacher.shape
        t = teacher[:, matching.flatten()].view(n, g, c_s, h, w)
        m = margin.to(teacher.dtype)[matching]  # (G, C_s)
        if self.reducer == "sp" or g == 1:
            return t[:, 0], m[0]
        if self.reducer == "amp":
            idx = t.abs().argmax(dim=1, keepdim=True)
            return t.gather(1, idx).squeeze(1), m.mean(0)
        idx = torch.randint(0, g, (n, 1, c_s, h, w), device=t.device)
        m_idx = torch.randint(0, g, (1, c_s), device=t.device)
        return t.gather(1, idx).squeeze(1), m.gather(0, m_idx).squeeze(0)
