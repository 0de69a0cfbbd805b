"""Jobs: what to compare (taps), how (connector + loss), how much (weight, warm-up).

A :class:`DistillJob` is the declarative spec (what other toolboxes call a *mimic job*); it is a
pydantic model, so a YAML/dict job is validated with errors naming the field. :class:`JobModule` is
its runtime form inside a :class:`~kdforge.distiller.Distiller`: it owns the connectors and the loss
(their parameters train with the student).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Sequence

import torch
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from torch import Tensor, nn

from .connectors import Connector, Identity, build_connector
from .losses.base import check_same_shape
from .registry import CONNECTORS, LOSSES

LossSpec = str | dict[str, Any]
ConnectorSpec = str | dict[str, Any] | None

#: the pseudo-teacher whose taps are the student's own (detached) tensors: self-distillation
SELF = "self"


class JobError(ValueError):
    """A job that cannot run with the models and data it is given (found while building or calling it)."""


def check_names(info: ValidationInfo) -> bool:
    """Whether validation checks registered names and their arguments (off only for a structural check,
    e.g. of a translated config whose models and losses the user supplies later)."""
    return bool((info.context or {}).get("check_names", True))


def _listify(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


class DistillJob(BaseModel):
    """One distillation job: student taps vs teacher taps through connectors and a loss.

    Seeds' names are accepted as aliases: ``loss_weight`` (weight), ``warm_up_iters``
    (warmup_iters), ``mimic_name`` (name), ``student_module``/``student_taps``,
    ``teacher_module``/``teacher_taps``, ``teacher_names`` (teachers). A loss is a registered name,
    ``{"type": name, **kwargs}`` or ``{"type": name, "kwargs": {...}}``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    loss: LossSpec | nn.Module
    student: list[str] = Field(validation_alias=AliasChoices("student", "student_taps", "student_module",
                                                             "student_layers"))
    teacher: list[str] = Field(validation_alias=AliasChoices("teacher", "teacher_taps", "teacher_module",
                                                             "teacher_layers"))
    name: str | None = Field(default=None, validation_alias=AliasChoices("name", "mimic_name"))
    teachers: list[str] | None = Field(default=None, validation_alias=AliasChoices("teachers", "teacher_names"))
    teacher_weights: list[float] | None = None
    combine: Literal["mean", "confidence"] = "mean"
    connector: ConnectorSpec | list[ConnectorSpec] | nn.Module = None
    weight: float = Field(default=1.0, validation_alias=AliasChoices("weight", "loss_weight"))
    warmup_iters: int = Field(default=0, ge=0, validation_alias=AliasChoices("warmup_iters", "warm_up_iters"))
    #: a negative ``weight`` (or teacher weight) maximises that loss; refused unless this is true
    allow_negative_weight: bool = False
    schedule: Callable[[int], float] | None = Field(default=None, exclude=True)

    _split = field_validator("student", "teacher", "teachers", mode="before")(lambda v: _listify(v))

    @field_validator("weight", "warmup_iters", "teacher_weights", mode="before")
    @classmethod
    def _no_numeric_strings(cls, v: Any) -> Any:
        """``weight: "0.5"`` is refused (not silently converted): the config says a string."""
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, (str, bytes)):
                shown = repr(x) if len(repr(x)) <= 40 else repr(x)[:37] + "..."
                raise ValueError(f"must be a number, got the string {shown}; write the number without quotes")
            if isinstance(x, bool):
                raise ValueError(f"must be a number, got {x}")
        return v

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, v: Any, info: ValidationInfo) -> Any:
        if check_names(info):
            from . import losses  # noqa: F401  (the loss zoo registers on import)

            LOSSES.check_spec(v)
        return v

    @field_validator("connector")
    @classmethod
    def _known_connector(cls, v: Any, info: ValidationInfo) -> Any:
        if check_names(info):
            for c in v if isinstance(v, list) else [v]:
                CONNECTORS.check_spec(c, default="identity")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DistillJob":
        if not self.student or not self.teacher:
            raise ValueError("a job needs at least one student tap and one teacher tap")
        if self.teacher_weights is not None and self.teachers is not None \
                and len(self.teacher_weights) != len(self.teachers):
            raise ValueError(f"teacher_weights has {len(self.teacher_weights)} entries for "
                             f"{len(self.teachers)} teachers {self.teachers}; give one weight per teacher")
        if not self.allow_negative_weight:
            if self.weight < 0:
                raise ValueError(f"weight={self.weight} is negative: the job would maximise its loss. Use a weight "
                                 f">= 0, or set allow_negative_weight: true if that is intended")
            if self.teacher_weights is not None and any(w < 0 for w in self.teacher_weights):
                raise ValueError(f"teacher_weights {self.teacher_weights} has a negative entry; use weights >= 0, or "
                                 f"set allow_negative_weight: true if that is intended")
        if self.teachers is not None and not self.teachers:
            raise ValueError(f"teachers is empty; name the teachers of this job, or [{SELF!r}] for "
                             f"self-distillation (the student's own taps)")
        return self

    def warmup_factor(self, step: int) -> float:
        """Linear ramp 0 → 1 over ``warmup_iters`` training steps, times the optional schedule."""
        f = 1.0 if self.warmup_iters == 0 else min(1.0, step / self.warmup_iters)
        return f * (self.schedule(step) if self.schedule is not None else 1.0)


def build_loss(spec: LossSpec | nn.Module) -> nn.Module:
    """A loss module from a name, a ``{"type": ..., **kwargs}`` dict, or a ready module."""
    return LOSSES.from_spec(spec)


class JobModule(nn.Module):
    """Runtime job: connectors per (student, teacher) tap pair and the loss."""

    def __init__(self, spec: DistillJob, name: str, teacher_names: Sequence[str]) -> None:
        super().__init__()
        self.spec, self.name, self.teacher_names = spec, name, list(teacher_names)
        self._placed = False  # moved to the features' device on the first call (_place)
        self.loss = build_loss(spec.loss)
        self.pairwise = getattr(self.loss, "pairwise", True)
        self.same_shape = getattr(self.loss, "same_shape", True)
        self.multi_teacher = getattr(self.loss, "multi_teacher", False)
        n_s, n_t = len(spec.student), len(spec.teacher)
        if self.pairwise and n_s != n_t:
            raise ValueError(f"job {name!r}: loss {type(self.loss).__name__} compares tap pairs, but the job "
                             f"has {n_s} student taps {spec.student} and {n_t} teacher taps {spec.teacher}")
        conns = spec.connector if isinstance(spec.connector, list) else [spec.connector] * n_s
        if len(conns) != n_s:
            raise ValueError(f"job {name!r}: {len(conns)} connectors for {n_s} student taps; give one per tap")
        self.connectors = nn.ModuleList(build_connector(c) for c in conns)
        w = spec.teacher_weights
        if w is not None and len(w) != len(self.teacher_names):
            raise ValueError(f"teacher_weights has {len(w)} entries for the {len(self.teacher_names)} teacher(s) "
                             f"{self.teacher_names} of this job; give one weight per teacher")
        self.teacher_weights = [1.0 / len(self.teacher_names)] * len(self.teacher_names) if w is None else list(w)

    def forward(self, student: list[Tensor], teachers: list[list[Tensor]], ctx: dict[str, Any],
                teacher_logits: list[Tensor] | None = None) -> Tensor:
        """``student``: one tensor per student tap; ``teachers``: per teacher, one tensor per teacher tap;
        ``teacher_logits``: each teacher's output, needed by ``combine="confidence"``."""
        weights = self.teacher_weights
        if self.spec.combine == "confidence" and len(teachers) > 1:
            labels = ctx.get("labels")
            if labels is None or teacher_logits is None:
                raise ValueError(f"job {self.name!r} combines teachers by confidence and needs labels=... "
                                 f"in the distiller call (and the teachers' logits)")
            for tname, z in zip(self.teacher_names, teacher_logits):
                if not isinstance(z, Tensor) or z.dim() != 2:
                    got = type(z).__name__ if not isinstance(z, Tensor) else f"a tensor of shape {tuple(z.shape)}"
                    raise JobError(f"job {self.name!r}: combine='confidence' ranks teachers by the cross-entropy "
                                   f"of their logits, so each teacher must return (N, classes) logits; teacher "
                                   f"{tname!r} returns {got}. Use combine='mean' (optionally with teacher_weights)")
            teachers, weights = combine_by_confidence(teachers, teacher_logits, labels), [1.0]
        if not self._placed:
            self._place(student)
        s = [self._connect(i, x, teachers[0][i] if i < len(teachers[0]) else None) for i, x in enumerate(student)]
        if self.same_shape and self.pairwise:
            for i, (x, t) in enumerate(zip(s, teachers[0])):
                check_same_shape(x, t, f"job {self.name!r}, pair {self.spec.student[i]!r} ↔ {self.spec.teacher[i]!r}")
        if self.multi_teacher and len(teachers) > 1:
            ctx = {**ctx, "teacher_weights": self.teacher_weights}
            if self.pairwise:
                return _sum(self.loss(x, [t[i] for t in teachers], **ctx) for i, x in enumerate(s))
            return self.loss(s, teachers, **ctx)
        total: Tensor | None = None
        for w, t in zip(weights, teachers):
            val = _sum(self.loss(x, y, **ctx) for x, y in zip(s, t)) if self.pairwise else self.loss(s, t, **ctx)
            if w != 1.0:  # x * 1.0 is x (one teacher): skip the op, not the math
                val = w * val
            total = val if total is None else total + val
        assert total is not None
        return total

    def _place(self, student: list[Tensor]) -> None:
        """On the first call, move the job (its connectors and loss modules, still lazy or built on the CPU) to
        the student features' device: a Distiller built around CUDA models then works without a ``.to()`` of
        its own. Later calls change nothing (an optimiser may hold the parameters by then)."""
        self._placed = True
        dev = next((x.device for x in student if isinstance(x, Tensor)), None)
        if dev is not None and any(t.device != dev for t in [*self.parameters(), *self.buffers()]):
            self.to(dev)

    def _connect(self, i: int, x: Tensor, target: Tensor | None) -> Tensor:
        conn = self.connectors[i]
        if type(conn) is Identity:  # no connector: skip a module call per pair and step
            return x
        if isinstance(conn, Connector) and target is not None:
            conn.bind_once(x.shape, target.shape)
        return conn(x)


def _sum(values: Iterable[Tensor]) -> Tensor:
    """``sum(values)`` without the ``0 + first`` op (the same value)."""
    it = iter(values)
    total = next(it)
    for v in it:
        total = total + v
    return total


def combine_by_confidence(teachers: list[list[Tensor]], logits: list[Tensor], labels: Tensor) -> list[list[Tensor]]:
    """Per sample, keep the tensors of the teacher whose logits have the lowest cross-entropy."""
    ce = torch.stack([nn.functional.cross_entropy(z.float(), labels, reduction="none") for z in logits])
    best = ce.argmin(0)  # (N,)
    out = []
    for i in range(len(teachers[0])):
        stacked = torch.stack([t[i] for t in teachers])  # (K, N, ...)
        idx = best.view(1, -1, *([1] * (stacked.dim() - 2))).expand(1, *stacked.shape[1:])
        out.append(stacked.gather(0, idx).squeeze(0))
    return [out]
