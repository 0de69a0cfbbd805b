"""Pydantic schema of a distillation set-up: student, teachers (with weights paths) and jobs.

:class:`DistillConfig` is what :func:`kdforge.build_distiller` needs; a training run's
:class:`~kdforge.config.run.RunConfig` *is* a DistillConfig with the training sections added, so one
YAML file drives both the Python API and ``kdforge train``.
"""
from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..job import DistillJob, check_names
from ..teacher_exec import TeacherExec

#: model-name prefixes resolved by other libraries at build time (their kwargs are checked then)
EXTERNAL_MODEL_PREFIXES = ("torchvision", "timm", "hf")
#: a teacher's ``dtype:`` → the torch dtype's name
MODEL_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16", "half": "float16"}


class ModelSpec(BaseModel):
    """A model: a zoo name (``resnet8x4``), ``"package.module:callable"``, or ``torchvision:NAME``.

    ``weights`` is a state-dict file (``.pt``/``.pth`` loaded with ``weights_only=True``, or
    ``.safetensors``); ``weights_key`` picks the state dict inside a checkpoint dict.

    Teachers only: ``dtype`` (``float32``/``bfloat16``/``float16``, or ``fp32``/``bf16``/``fp16``)
    converts the teacher after its weights are loaded; ``device`` (``cpu``, ``cuda``, ``cuda:1``, …)
    runs it on a device of its own, which it keeps when the run moves the models to ``device``. The
    teacher then gets its inputs in its dtype on its device and its taps reach the jobs in the
    student's (see :mod:`kdforge.placement`).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(validation_alias=AliasChoices("name", "type", "model", "arch"))
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(default=None, validation_alias=AliasChoices("weights", "teacher_weight",
                                                                            "weights_path", "pretrained"))
    weights_key: str | None = None
    strict: bool = True
    dtype: str | None = None
    device: str | None = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> Any:
        if v is None:
            return v
        name = MODEL_DTYPES.get(str(v).removeprefix("torch."))
        if name is None:
            raise ValueError(f"dtype {v!r} is not one of {sorted(set(MODEL_DTYPES.values()))} (or fp32/bf16/fp16, "
                             f"or null for the weights' own dtype)")
        return name

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        if v is None:
            return v
        import torch

        try:
            return str(torch.device(str(v)))
        except RuntimeError:
            raise ValueError(f"device {v!r} is not a torch device; use e.g. cpu, cuda, cuda:1 (or null for the "
                             f"run's device)") from None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    def check(self) -> None:
        """Raise if the name is not a registered/importable model or the kwargs do not fit it
        (``torchvision:``/``timm:``/``hf:`` names are checked when built)."""
        if ":" in self.name and self.name.partition(":")[0] in EXTERNAL_MODEL_PREFIXES:
            return
        from .. import models  # noqa: F401  (the zoo registers on import)
        from ..registry import MODELS

        MODELS.check_args(self.name, self.kwargs)


def _given(info: ValidationInfo) -> set[str]:
    """Models handed over as live modules (``student``, teacher names): their specs are not checked."""
    if not check_names(info):
        return _EVERYTHING
    return set((info.context or {}).get("given_models", ()))


class _Everything(set):  # type: ignore[type-arg]
    def __contains__(self, item: object) -> bool:
        return True


_EVERYTHING = _Everything()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class DistillConfig(_Strict):
    """``student`` (alias ``model``), named ``teachers`` and ``jobs`` (alias ``mimic_jobs``)."""

    student: ModelSpec = Field(validation_alias=AliasChoices("student", "model"))
    teachers: dict[str, ModelSpec] = Field(default_factory=dict)
    jobs: list[DistillJob] = Field(default_factory=list, validation_alias=AliasChoices("jobs", "mimic_jobs"))
    teacher_exec: TeacherExec = Field(default_factory=TeacherExec)  # how teachers run (kdforge/teacher_exec.py)

    @field_validator("student")
    @classmethod
    def _known_student(cls, v: ModelSpec, info: ValidationInfo) -> ModelSpec:
        if v.dtype is not None or v.device is not None:
            raise ValueError("dtype and device are teacher settings: the student trains on the run's device "
                             "(top-level device:) in float32, with train.amp for mixed precision; remove them "
                             "from student:")
        if "student" not in _given(info):
            v.check()
        return v

    @field_validator("teachers")
    @classmethod
    def _known_teachers(cls, v: dict[str, ModelSpec], info: ValidationInfo) -> dict[str, ModelSpec]:
        for name, spec in v.items():
            if name not in _given(info):
                try:
                    spec.check()
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
        return v

    @property
    def model(self) -> ModelSpec:
        """The student's spec (a run without jobs trains it alone)."""
        return self.student

    def distill_part(self) -> "DistillConfig":
        """Only the student, teachers, jobs and teacher_exec (a RunConfig without its training sections)."""
        return DistillConfig.model_validate({"student": self.student, "teachers": self.teachers, "jobs": self.jobs,
                                             "teacher_exec": self.teacher_exec})
