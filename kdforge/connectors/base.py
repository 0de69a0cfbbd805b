"""Learnable shape adapters that map a student feature to its teacher's shape.

Every connector is an ``nn.Module`` registered in :data:`CONNECTORS`. Connectors infer their shapes:
their layers are torch *lazy* modules whose input width is read from the first student tensor, and
whose output width is set by :meth:`Connector.bind` from the teacher tensor just before the first
call. Their parameters exist (uninitialised) from construction, so an optimiser built from
``distiller.learnable_parameters()`` before the first step trains them.

Register your own::

    @CONNECTORS.register("conv3x3")
    class Conv3x3(Connector):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.LazyConv2d(0, 3, padding=1)
        def bind(self, student_shape, teacher_shape):
            self.conv.out_channels = teacher_shape[1]
        def forward(self, x):
            return self.conv(x)
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from ..registry import CONNECTORS

Shape = Sequence[int]


class Connector(nn.Module):
    """Base connector. ``bind(student_shape, teacher_shape)`` is called once before first use."""

    bound: bool = False

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:  # noqa: D401
        """Fix output sizes from the teacher's shape (no-op by default)."""

    def bind_once(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if not self.bound:
            self.bind(tuple(student_shape), tuple(teacher_shape))
            self.bound = True


def build_connector(spec: str | dict[str, Any] | nn.Module | None) -> nn.Module:
    """A connector from a name, ``{"type": name, **kwargs}``, a ready module, or ``None`` (identity)."""
    return CONNECTORS.from_spec(spec, default="identity")
