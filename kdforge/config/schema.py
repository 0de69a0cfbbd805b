"""Pydantic schema of a distillation set-up: student, teachers (with weights paths) and jobs."""
from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ..job import DistillJob
from ..teacher_exec import TeacherExec


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

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class DistillConfig(BaseModel):
    """``student``, named ``teachers`` and ``jobs`` (alias ``mimic_jobs``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    student: ModelSpec
    teachers: dict[str, ModelSpec] = Field(default_factory=dict)
    jobs: list[DistillJob] = Field(default_factory=list, validation_alias=AliasChoices("jobs", "mimic_jobs"))
    teacher_exec: TeacherExec = Field(default_factory=TeacherExec)
