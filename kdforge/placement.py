"""Where a model's tensors live — its *placement*: a device and a floating-point dtype.

Large teachers often run somewhere else than the student: in bfloat16/float16 next to a float32
student, on a second GPU, or on the CPU while the student trains on the GPU. The rule kdforge follows:

* a teacher's placement is the device and dtype of its first floating-point parameter (or, for a
  model without parameters, its first floating-point buffer); a model with neither takes its inputs
  as they are;
* each teacher gets its inputs on its own device, floating-point inputs cast to its dtype (integer
  inputs such as token ids are only moved, never cast); nested tuples, lists and dicts are followed;
  a teacher whose parameters are spread over several devices (model parallel) gets its inputs on the
  device of its first parameter and moves them on itself, as Hugging Face ``device_map`` models do;
* every tapped teacher tensor (and teacher output) reaches the jobs on the *student's* device in the
  student's floating dtype (its parameters' dtype; under autocast that is still the parameters'
  dtype — autocast itself is left alone).

:func:`to_placement` is the one move-and-cast helper; it copies nothing that is already in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree


@dataclass(frozen=True)
class Placement:
    """A device and a floating-point dtype (``None``: the model holds no floating-point tensor)."""

    device: torch.device
    dtype: torch.dtype | None

    def __str__(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.') if self.dtype else 'no float dtype'} on {self.device}"


def probe_tensor(model: nn.Module) -> Tensor | None:
    """The tensor that stands for ``model``'s placement: its first floating-point parameter, else its
    first parameter, else its first floating-point buffer, else its first buffer, else ``None``.

    A parameter keeps its identity through ``.to()`` and lazy materialisation, so callers may keep it
    and read its ``device``/``dtype`` on every call (buffers are replaced by ``.to()``: re-probe)."""
    first = None
    for p in model.parameters():
        if p.is_floating_point():
            return p
        first = first if first is not None else p
    if first is not None:
        return first
    for b in model.buffers():
        if b.is_floating_point():
            return b
        first = first if first is not None else b
    return first


def placement_of(model: nn.Module | Tensor | None) -> Placement | None:
    """``model``'s :class:`Placement` (from :func:`probe_tensor`, or the tensor itself), ``None`` for a
    model without parameters or buffers."""
    t = model if isinstance(model, Tensor) or model is None else probe_tensor(model)
    if t is None:
        return None
    return Placement(t.device, t.dtype if t.is_floating_point() else None)


def to_placement(x: Any, device: torch.device | str | None, dtype: torch.dtype | None = None) -> Any:
    """``x`` (a tensor, or tuples/lists/dicts/namedtuples of them) on ``device``, floating-point tensors
    cast to ``dtype``; other tensors (integer ids, boolean masks) are only moved; non-tensors pass.

    ``None`` for ``device``/``dtype`` leaves that part as it is. Tensors already in place are
    returned as they are (no copy). A tensor that needs a gradient is moved with a differentiable
    copy (``Tensor.to`` is differentiable)."""
    if device is None and dtype is None:
        return x
    device = torch.device(device) if device is not None else None

    def move(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        want = dtype if dtype is not None and t.is_floating_point() else t.dtype
        if (device is None or t.device == device) and t.dtype == want:
            return t
        return t.to(device=device if device is not None else t.device, dtype=want)

    if isinstance(x, Tensor):
        return move(x)
    return pytree.tree_map(move, x)


def needs_move(a: Placement | None, b: Placement | None) -> bool:
    """Whether tensors made at placement ``a`` must be moved or cast to reach placement ``b``."""
    if a is None or b is None:
        return False
    return a.device != b.device or (a.dtype is not None and b.dtype is not None and a.dtype != b.dtype)


def inputs_to(inputs: tuple[Any, ...], kwargs: Mapping[str, Any], where: Placement | None,
              ) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword model inputs at ``where`` (unchanged when ``where`` is ``None``)."""
    if where is None:
        return inputs, dict(kwargs)
    return (tuple(to_placement(a, where.device, where.dtype) for a in inputs),
            {k: to_placement(v, where.device, where.dtype) for k, v in kwargs.items()})


__all__ = ["Placement", "inputs_to", "needs_move", "placement_of", "probe_tensor", "to_placement"]
