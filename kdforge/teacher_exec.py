"""How the frozen teachers run: memory format, order, ``torch.compile`` and autocast.

A teacher never trains, so its forward can take the fastest execution that gives the same outputs.
:class:`TeacherExec` is the switch board (``teacher_exec:`` in a config, ``teacher_exec=`` of
:class:`~kdforge.Distiller`); the defaults are what measured faster on the demo pairs
(``benchmarks/teacher_path.py``, numbers in the README):

``channels_last: auto``
    Conv teachers (any ``nn.Conv2d``) get their weights in ``torch.channels_last`` memory format,
    so their convolutions and pooling run in NHWC (oneDNN on CPU, cuDNN on CUDA). 4-D tapped
    tensors are handed to the losses in the default (contiguous) format, so loss code is unaffected.
    If the teacher's forward fails in that format (a model that ``.view()``-s a feature map), the
    first call warns and runs it in the default format from then on.
``teacher_first: true``
    Teachers run before the student (the student's activations for backward are then allocated
    after the teacher's short-lived ones; measured faster on both pairs).
``compile: false``
    ``torch.compile`` the teachers (``compile_backend``; ``inductor`` needs a C++ compiler on CPU).
    Off by default: compiling costs tens of seconds up front and pays only on long runs.
``student_channels_last: false``
    Opt-in (``auto`` or ``true``): conv students whose output is class logits get their weights in
    channels_last too (forward and backward in NHWC; the state dict holds the same values; taps
    reach the losses contiguous). Students with dense outputs (segmentation, detection) stay in the
    default format, because the task's criterion and metrics read those outputs directly. Decided
    on the first call, which is rerun in the default format when needed (BN statistics it touched
    are restored first). Off by default: with the CPU torch 2.13 wheel, backward through a
    channels_last ResNet whose block output feeds a 1×1-conv connector aborted the process ("double
    free or corruption", reproduced in plain PyTorch without kdforge), which no fallback can catch.
Inputs follow the teacher: each call hands the teacher its inputs on its own device, floating-point
inputs in its parameters' dtype (:mod:`kdforge.placement`), so a bfloat16 teacher or one on another
device takes the same batch as the student.

``autocast: null``
    ``bf16``/``fp16``: run the teachers under ``torch.autocast`` and hand float32 taps to the losses.
    Off by default: the KD loss then differs from the float32 one (measured in the benchmark) and on
    CPUs without bf16 instructions it is much slower; fp16 needs CUDA.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from .placement import Placement, inputs_to, placement_of, probe_tensor

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TeacherExec(BaseModel):
    """Execution of the frozen teachers; every speed-up has a switch (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    channels_last: bool | Literal["auto"] = "auto"
    teacher_first: bool = True
    compile: bool = False
    compile_backend: str = Field(default="inductor", min_length=1)
    autocast: Literal["bf16", "fp16"] | None = None
    student_channels_last: bool | Literal["auto"] = False

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, v: Any) -> Any:
        if v == "plain":  # `teacher_exec: plain` = every speed-up off (the pre-0.2 path)
            return {"channels_last": False, "teacher_first": False, "compile": False, "autocast": None,
                    "student_channels_last": False}
        return v

    @classmethod
    def plain(cls) -> "TeacherExec":
        """Every speed-up off: contiguous weights, student first, eager, float32."""
        return cls.model_validate("plain")


def uses_channels_last(model: nn.Module, setting: bool | str) -> bool:
    """Whether ``setting`` puts ``model`` in channels_last: ``auto`` = it has a 2-D convolution."""
    if setting == "auto":
        return any(isinstance(m, nn.Conv2d) for m in model.modules())
    return bool(setting)


def to_plain(x: Any) -> Any:
    """A 4-D tensor in the default contiguous format, float32 if it came out of autocast."""
    if isinstance(x, Tensor):
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        if x.dim() == 4 and not x.is_contiguous():
            x = x.contiguous()
    return x


def to_contiguous(x: Any) -> Any:
    """A 4-D tensor in the default contiguous format (differentiable copy when it is channels_last)."""
    if isinstance(x, Tensor) and x.dim() == 4 and not x.is_contiguous():
        return x.contiguous()
    return x


class ChannelsLast:
    """Puts ``model``'s weights in channels_last if ``setting`` says so, and guards the first call.

    With ``setting="auto"`` the first :meth:`call` that fails with a ``RuntimeError`` (a model that
    ``.view()``-s a feature map) restores the buffers it may have touched (BN statistics), puts the
    model back in the default format, warns, and calls again; an error that the default format does
    not fix is re-raised as it was.
    """

    def __init__(self, role: str, model: nn.Module, setting: bool | str,
                 keep: Callable[[Any], bool] | None = None) -> None:
        self.role, self.model, self.setting, self.keep = role, model, setting, keep
        self.on = uses_channels_last(model, setting)
        self.checked = not (self.on and setting == "auto")
        if self.on:
            model.to(memory_format=torch.channels_last)

    def call(self, fn: Callable[..., Any], *inputs: Any, **kwargs: Any) -> Any:
        if self.checked:
            return fn(*inputs, **kwargs)
        saved = {k: b.clone() for k, b in self.model.named_buffers()}
        try:
            out = fn(*inputs, **kwargs)
        except RuntimeError as e:
            out = self._fall_back(fn, inputs, kwargs, saved, e)
        else:
            if self.keep is not None and not self.keep(out):  # outputs others would see in channels_last
                out = self._fall_back(fn, inputs, kwargs, saved, None)
        self.checked = True
        return out

    def _fall_back(self, fn: Callable[..., Any], inputs: tuple[Any, ...], kwargs: dict[str, Any],
                   saved: dict[str, Tensor], error: RuntimeError | None) -> Any:
        with torch.no_grad():  # undo what the first call did to BN statistics
            for k, b in self.model.named_buffers():
                b.copy_(saved[k])
        self.model.to(memory_format=torch.contiguous_format)
        try:
            out = fn(*inputs, **kwargs)
        except RuntimeError:  # not a memory-format problem: report the first error as it was
            self.model.to(memory_format=torch.channels_last)
            if error is None:
                raise
            raise error from None
        self.on = False
        if error is not None:
            warnings.warn(f"{self.role} failed in channels_last memory format ({error}); it runs in the default "
                          f"format from now on (set teacher_exec.{'student_' if self.role == 'student' else ''}"
                          f"channels_last: false to skip this try)", stacklevel=5)
        return out


def logits_only(out: Any) -> bool:
    """An output no caller can trip over in channels_last: one tensor of at most 2 dims (class logits).
    Students with dense outputs (segmentation maps, detection heads) stay in the default format,
    since the task's criterion and metrics read those outputs directly."""
    return isinstance(out, Tensor) and out.dim() <= 2


class TeacherRunner:
    """One teacher's forward as :class:`TeacherExec` says (the Distiller holds one per teacher)."""

    def __init__(self, name: str, model: nn.Module, cfg: TeacherExec) -> None:
        self.name, self.model, self.cfg = name, model, cfg
        self.format = ChannelsLast(f"teacher {name!r}", model, cfg.channels_last)
        self.fn: Callable[..., Any] = model
        if cfg.compile:
            self.fn = torch.compile(model, backend=cfg.compile_backend)
        self.dtype = _DTYPES[cfg.autocast] if cfg.autocast else None
        self._probe = probe_tensor(model)  # a parameter keeps its identity through .to(); a buffer does not

    @property
    def placement(self) -> Placement | None:
        """Where the teacher runs now (its first floating parameter's device and dtype)."""
        if not isinstance(self._probe, nn.Parameter) or self._probe.device.type == "meta":
            self._probe = probe_tensor(self.model)
        return placement_of(self._probe)

    @property
    def channels_last(self) -> bool:
        return self.format.on

    @property
    def converts(self) -> bool:
        """Whether the teacher's taps need :func:`to_plain` (channels_last or autocast)."""
        return self.format.on or self.dtype is not None

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        inputs, kwargs = inputs_to(inputs, kwargs, self.placement)
        return self.format.call(self._run, *inputs, **kwargs)

    def _run(self, *inputs: Any, **kwargs: Any) -> Any:
        if self.dtype is None:
            return self.fn(*inputs, **kwargs)
        x = next((a for a in (*inputs, *kwargs.values()) if isinstance(a, Tensor)), None)
        device = x.device.type if x is not None else "cpu"
        if self.dtype == torch.float16 and device != "cuda":
            raise ValueError(f"teacher_exec.autocast=fp16 needs a CUDA device (inputs are on {device}); use bf16 "
                             f"or null")
        with torch.autocast(device_type=device, dtype=self.dtype):
            return self.fn(*inputs, **kwargs)


__all__ = ["ChannelsLast", "logits_only", "TeacherExec", "TeacherRunner", "to_contiguous", "to_plain", "uses_channels_last"]
