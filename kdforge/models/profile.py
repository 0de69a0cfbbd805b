"""Model size and cost: parameter counts, FLOPs and multiply-accumulates (MACs) of any architecture.

``count_flops`` runs one forward pass under PyTorch's own counter,
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts at the level of aten operators: every
matrix multiply (``mm``/``addmm``/``bmm``/``baddbmm``, so ``nn.Linear``, ``F.linear``, ``@``/``matmul``,
``einsum``, HF's ``Conv1D``), every convolution (transposed and grouped too) and scaled-dot-product
attention (``QKᵀ`` and ``AV``, also on CPU; causal masks are not discounted) — whatever module issues it. A multiply-add is 2 FLOPs; ``count_macs`` is FLOPs / 2, the
"FLOPs" figure of KD papers (really MACs). Norms, activations, pooling, element-wise additions and
biases are not counted (as in the papers' tables).

The forward runs with autograd *enabled* (in eval mode, with BN statistics untouched): under
``no_grad`` modules such as ``nn.MultiheadAttention``/``nn.TransformerEncoderLayer`` take a fused
fast path whose kernels the counter does not see.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _sdpa_cpu_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict[Any, Any]:
    """Operators the installed torch's counter lacks: the CPU flash-attention kernel that
    ``F.scaled_dot_product_attention`` (HF models, ``nn.MultiheadAttention``) runs on CPU."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None and op not in flop_registry else {}


def _run(model: nn.Module, example_input: Tensor | tuple[Any, ...] | dict[str, Any]) -> None:
    from ..placement import placement_of, to_placement

    where = placement_of(model)  # a bfloat16 model or one on a GPU takes the example where it runs
    if where is not None:
        example_input = to_placement(example_input, where.device, where.dtype)
    if isinstance(example_input, dict):
        model(**example_input)
    elif isinstance(example_input, tuple):
        model(*example_input)
    else:
        model(example_input)


def count_flops(model: nn.Module, example_input: Tensor | tuple[Any, ...] | dict[str, Any],
                by_module: bool = False) -> int | dict[str, int]:
    """FLOPs of one forward pass of ``model`` on ``example_input`` (2 per multiply-add; see module docs).

    The count covers the whole batch: pass a batch of one (e.g. ``torch.zeros(1, 3, 32, 32)``) for the
    per-sample figure. A tuple is unpacked as positional arguments, a dict as keyword arguments. The
    model runs in eval mode and its train/eval mode is restored afterwards; a layer called twice
    counts twice. ``by_module=True`` returns ``{module path: FLOPs}`` instead (``""`` = the total;
    a parent includes its children).
    """
    was_training = model.training
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        model.eval()
        with torch.enable_grad(), counter:
            _run(model, example_input)
    finally:
        model.train(was_training)
    if not by_module:
        return int(counter.get_total_flops())
    out: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        # the counter names modules by class at the root ("Global", then "ResNet.layer1.0.conv1")
        path = "" if name == "Global" else name.split(".", 1)[1] if "." in name else None
        if path is not None:
            out[path] = int(sum(ops.values()))
    return out


def count_macs(model: nn.Module, example_input: Tensor | tuple[Any, ...] | dict[str, Any]) -> int:
    """Multiply-accumulates of one forward pass: ``count_flops(model, example_input) // 2``."""
    return int(count_flops(model, example_input)) // 2  # type: ignore[arg-type]


__all__ = ["count_flops", "count_macs", "count_params"]
