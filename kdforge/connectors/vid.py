"""VID's mean regressor (Ahn et al., CVPR 2019), registered as ``vid_regressor`` (the loss is
:class:`kdforge.losses.vid.VIDLoss`)."""
from __future__ import annotations

from torch import nn

from ..registry import CONNECTORS
from .base import Connector


@CONNECTORS.register("vid_regressor")
class VIDRegressor(nn.Sequential, Connector):
    """VID's mean regressor: ``conv1x1(C_s→M) → ReLU → conv1x1(M→M) → ReLU → conv1x1(M→C_t)``, no
    bias, ``M = C_t`` unless ``mid_channels`` is given (RepDistiller's ``VIDLoss(s, t, t)``)."""

    def __init__(self, mid_channels: int | None = None) -> None:
        super().__init__(nn.LazyConv2d(mid_channels or 0, 1, bias=False), nn.ReLU(),
                         nn.LazyConv2d(mid_channels or 0, 1, bias=False), nn.ReLU(),
                         nn.LazyConv2d(0, 1, bias=False))
        self.mid_channels = mid_channels

    def bind(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
        c_t = teacher_shape[1]
        mid = self.mid_channels or c_t
        self[0].out_channels = mid
        self[2].out_channels = mid
        self[4].out_channels = c_t
