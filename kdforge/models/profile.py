"""Model size and cost: parameter counts and multiply-accumulates (MACs).

``count_macs`` counts the MACs of convolution (``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``) and
``Linear`` layers (and Hugging Face's GPT-2-style ``Conv1D``, a linear layer with transposed weights)
only — the usual "FLOPs" figure of KD papers (which is really MACs). Norms, activations, pooling,
additions, biases and attention's score/value products are not counted.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> int:
    if isinstance(module, _CONV):
        # every output element: (in_channels / groups) × kernel elements
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_out
    if isinstance(module, _CONV_T):
        # every input element is spread over (out_channels / groups) × kernel elements
        per_in = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0].numel() * per_in
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if _is_hf_conv1d(module):
        return output.numel() * module.weight.shape[0]
    return 0


def _is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' ``Conv1D`` (GPT-2): ``x @ W + b`` with ``W`` of shape (in, out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def count_macs(model: nn.Module, example_input: Tensor | tuple[Any, ...] | dict[str, Any]) -> int:
    """MACs of the conv and linear layers in one forward pass of ``model`` on ``example_input``.

    The count covers the whole batch: pass a batch of one (e.g. ``torch.zeros(1, 3, 32, 32)``) for
    the per-image figure papers report. A tuple is unpacked as positional arguments, a dict as
    keyword arguments. The model runs in eval mode under ``torch.no_grad()`` (BN statistics are
    untouched) and its train/eval mode is restored afterwards. A layer called twice counts twice.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONV, *_CONV_T, nn.Linear)) or _is_hf_conv1d(m)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            elif isinstance(example_input, tuple):
                model(*example_input)
            else:
                model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)


__all__ = ["count_macs", "count_params"]
