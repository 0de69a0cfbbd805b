"""Weight initialisation shared by the CIFAR zoo (as in the CRD/RepDistiller reference models)."""
from __future__ import annotations

import math

from torch import nn


def he_init(model: nn.Module, linear_std: float | None = 0.01) -> None:
    """Conv: N(0, sqrt(2 / (k·k·C_out))) with zero bias; BN: weight 1, bias 0; Linear: zero bias and,
    unless ``linear_std`` is ``None`` (keep PyTorch's default), weights N(0, linear_std)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
