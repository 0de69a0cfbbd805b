"""Connectors for token sequences ``(B, L, D)``: a per-token projection of the student's width to the
teacher's, shared over positions (what TinyBERT's ``W_h`` and DistilBERT-style hidden-state jobs use),
and token ↔ feature-map connectors for distilling between CNNs and vision transformers.

The generic ``linear`` connector flattens everything but the batch — on ``(B, L, D)`` tokens that
would be an ``L·D_s × L·D_t`` matrix (2.9 B parameters for ViT-S → ViT-Ti); ``token_linear`` is a
``D_s × D_t`` one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import CONNECTORS
from .base import Connector, Shape


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


def _grid(n: int, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{what}: {n} patch tokens do not form a square grid; set num_prefix_tokens to the number "
                         f"of class/register tokens in front of the patches")
    return side


@CONNECTORS.register("tokens_to_map")
class TokensToMap(Connector):
    """ViT tokens ``(B, P + h·w, D)`` → a feature map ``(B, C_t, H_t, W_t)`` (ViT student, CNN teacher).

    The first ``num_prefix_tokens`` tokens (class/register tokens; default 1) are dropped, the patch
    tokens are laid out on their square ``h×w`` grid, resized bilinearly to the teacher's ``H_t×W_t``
    and projected by a 1×1 convolution (+ BatchNorm) to ``C_t`` channels.
    """

    def __init__(self, num_prefix_tokens: int = 1, bn: bool = True) -> None:
        super().__init__()
        if num_prefix_tokens < 0:
            raise ValueError(f"tokens_to_map: num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.prefix = num_prefix_tokens
        self.size: tuple[int, int] | None = None
        self.proj = nn.Sequential(nn.LazyConv2d(0, 1, bias=not bn), *([nn.LazyBatchNorm2d()] if bn else []))

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(student_shape) != 3 or len(teacher_shape) != 4:
            raise ValueError(f"tokens_to_map maps tokens (B, L, D) to a feature map (B, C, H, W), got student "
                             f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        _grid(student_shape[1] - self.prefix, "tokens_to_map")
        self.proj[0].out_channels = teacher_shape[1]
        self.size = (teacher_shape[2], teacher_shape[3])

    def forward(self, x: Tensor) -> Tensor:
        patches = x[:, self.prefix:]
        B, n, D = patches.shape
        side = _grid(n, "tokens_to_map")
        fmap = patches.transpose(1, 2).reshape(B, D, side, side)
        if self.size is not None and tuple(fmap.shape[2:]) != self.size:
            fmap = F.interpolate(fmap, size=self.size, mode="bilinear", align_corners=False)
        return self.proj(fmap)


@CONNECTORS.register("map_to_tokens")
class MapToTokens(Connector):
    """A feature map ``(B, C, H, W)`` → tokens ``(B, P + h·w, D_t)`` (CNN student, ViT teacher).

    The map is resized (adaptive average pooling, or bilinear upsampling) to the teacher's square patch
    grid ``h×w`` and each position projected by a ``Linear(C, D_t)``. The ``num_prefix_tokens`` tokens
    in front of the teacher's patches (default 1: a class token) are matched by the projection of the
    globally average-pooled map (the CNN's counterpart of a class token); set 0 when the teacher tap
    holds patch tokens only.
    """

    def __init__(self, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if num_prefix_tokens < 0:
            raise ValueError(f"map_to_tokens: num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.prefix = num_prefix_tokens
        self.side: int | None = None
        self.proj = nn.LazyLinear(0)

    def bind(self, student_shape: Shape, teacher_shape: Shape) -> None:
        if len(student_shape) != 4 or len(teacher_shape) != 3:
            raise ValueError(f"map_to_tokens maps a feature map (B, C, H, W) to tokens (B, L, D), got student "
                             f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}")
        self.side = _grid(teacher_shape[1] - self.prefix, "map_to_tokens")
        self.proj.out_features = teacher_shape[2]

    def forward(self, x: Tensor) -> Tensor:
        if self.side is None:
            raise RuntimeError("map_to_tokens is used before bind(): it learns the token grid from the teacher tap")
        side = self.side
        grid = F.adaptive_avg_pool2d(x, side) if x.shape[2] >= side and x.shape[3] >= side else \
            F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        tokens = grid.flatten(2).transpose(1, 2)                       # (B, h·w, C)
        if self.prefix:
            pooled = x.mean((2, 3)).unsqueeze(1).expand(-1, self.prefix, -1)
            tokens = torch.cat([pooled, tokens], 1)
        return self.proj(tokens)


__all__ = ["MapToTokens", "TokenLinear", "TokensToMap"]
