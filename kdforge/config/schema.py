"""Pydantic schema of a distillation set-up: student, teachers (with weights paths) and jobs.

:class:`DistillConfig` is what :func:`kdforge.build_distiller` needs; a training run's
:class:`~kdforge.config.run.RunConfig` *is* a DistillConfig with the training sections added, so one
YAML file drives both the Python API and ``kdforge train``.
"""
from __future__ import annotations

from typing import Literal, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ..job import DistillJob, check_names
from ..teacher_exec import TeacherExec

#: model-name prefixes resolved by other libraries at build time (their kwargs are checked then)
EXTERNAL_MODEL_PREFIXES = ("torchvision", "timm", "hf")


class ModelSpec(BaseModel):
    """A model: a zoo name (``resnet8x4``), ``"package.module:callable"``, or ``torchvision:NAME``.

    ``weights`` is a state-dict file (``.pt``/``.pth`` loaded with ``weights_only=True``, or
    ``.safetensors``); ``weights_key`` picks the state dict inside a checkpoint dict.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(validation_alias=AliasChoices("name", "type", "model", "arch"))
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(default=None, validation_alias=AliasChoices("weights", "teacher_weight",
                                                                            "weights_path", "pretrained"))
    weights_key: str | None = None
    strict: bool = True
    #: convert the built model (after loading its weights) to this dtype, e.g. a bfloat16 teacher beside a
    #: float32 student: the Distiller casts the inputs to the teacher's dtype and its taps back
    dtype: Literal["float32", "bfloat16", "float16"] | None = None

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
