"""Connectors for token sequences ``(B, L, D)``: a per-token projection of the student's width to the
teacher's, shared over positions (what TinyBERT's ``W_h`` and DistilBERT-style hidden-state jobs use).

The generic ``linear`` connector flattens everything but the batch — on ``(B, L, D)`` tokens that
would be an ``L·D_s × L·D_t`` matrix (2.9 B parameters for ViT-S → ViT-Ti); ``token_linear`` is a
``D_s × D_t`` one.
"""
from __future__ import annotations

from torch import Tensor, nn

from .connectors import Connector, Shape
from .registry import CONNECTORS


@CONNECTORS.register("token_linear")
class TokenLinear(Connector):
    """``(B, L, D_s) → (B, L, D_t)``: one ``Linear(D_s, D_t)`` applied to every token (any leading dims).

    ``out_features`` defaults to the teacher's last dimension; the leading dimensions (batch, length)
    must already agree — tap the same tokens on both sides.
    """

    def __init__(self, out_features: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.out_features = out_features
        self.proj = nn.LazyLinear(out_features or 0, bias=bias)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(student_shape) < 2 or len(teacher_shape) < 2:
            raise ValueError(f"token_linear maps token features (B, L, D), got student {tuple(student_shape)} and "
                             f"teacher {tuple(teacher_shape)}; use 'linear' for (N, D) vectors")
        if tuple(student_shape[:-1]) != tuple(teacher_shape[:-1]):
            raise ValueError(f"token_linear projects the last dimension only, but the student has tokens "
                             f"{tuple(student_shape[:-1])} and the teacher {tuple(teacher_shape[:-1])}; tap the same "
                             f"tokens (same batch and sequence length) on both sides")
        if self.out_features is None:
            self.proj.out_features = teacher_shape[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


__all__ = ["TokenLinear"]
