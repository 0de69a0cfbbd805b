"""Pydantic schema of a training run: the model, teachers and jobs, data, optimisation, checkpoints.

One YAML file drives ``kdforge train``::

    name: fmnist_kd
    model: {name: resnet8, kwargs: {num_classes: 10, in_channels: 1}}
    teachers:
      t0: {name: resnet32x4, kwargs: {num_classes: 10, in_channels: 1}, weights: runs/fmnist_teacher/model_best.pt}
    jobs:
      - {name: kd, loss: {type: kd, temperature: 4}, student: "", teacher: "", weight: 0.9}
    data: {name: fashion_mnist, batch_size: 128}
    train: {epochs: 10, ce_weight: 0.1, optimizer: {name: sgd, lr: 0.05}, schedule: {name: cosine}}

No ``jobs`` means plain training of ``model`` (a teacher, or a baseline student).

Loss weighting. The training loss is ``train.ce_weight * task_loss + Σ job.weight * job_loss``.
Hinton-style ``alpha`` recipes (``(1 - alpha) * CE + alpha * KD``) translate to
``ce_weight: 1 - alpha`` and the KD job's ``weight: alpha``; ``task_weight`` is accepted as an alias
of ``ce_weight``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ..job import DistillJob
from .loading import load
from .schema import ModelSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataConfig(_Strict):
    """Which dataset (a name in ``kdforge.engine.DATASETS``) and how to load it.

    ``batch_size`` is the *global* batch: under ``torchrun`` each of the N processes loads
    ``batch_size / N`` samples, so a recipe trains the same way on any number of processes.
    """

    name: str = "fashion_mnist"
    root: str | None = None
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    num_workers: int = Field(default=0, ge=0)
    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    augment: bool = False
    train_subset: int | None = Field(default=None, ge=1)
    test_subset: int | None = Field(default=None, ge=1)
    with_index: bool = False
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class ScheduleConfig(_Strict):
    """Per-iteration LR schedule: ``step`` (× ``gamma`` at each epoch in ``milestones``), ``cosine``
    (to ``min_lr``), ``onecycle`` (linear rise over ``pct_start`` of training from lr/``div_factor``,
    then cosine to ``min_lr``) or ``none``; ``warmup_epochs`` of linear warm-up before step/cosine/none."""

    name: Literal["step", "cosine", "onecycle", "none"] = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(default=0.1, gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    pct_start: float = Field(default=0.3, gt=0, lt=1)
    div_factor: float = Field(default=25.0, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class AmpConfig(_Strict):
    """Mixed precision: bf16 autocast (CPU or CUDA) or fp16 autocast + GradScaler (CUDA only)."""

    enabled: bool = False
    dtype: Literal["bf16", "fp16"] = "bf16"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"enabled": v}
        if isinstance(v, str):
            return {"enabled": True, "dtype": v}
        return v


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    ce_weight: float = Field(default=1.0, ge=0, validation_alias=AliasChoices("ce_weight", "task_weight"))
    amp: AmpConfig = Field(default_factory=AmpConfig)
    grad_clip: float | None = Field(default=None, gt=0)
    log_every: int = Field(default=50, ge=1)
    eval_every: int = Field(default=1, ge=1)
    #: stop when a logged training loss exceeds this factor × the run's first logged loss (null: never)
    divergence_factor: float | None = Field(default=1e4, gt=1)


class CheckpointConfig(_Strict):
    """``every``: a resumable checkpoint each N epochs (0: none besides ``last``/``best``)."""

    every: int = Field(default=0, ge=0)
    keep_best: bool = True
    keep_last: bool = True


class RunConfig(_Strict):
    """A complete training run; see the module docstring for an example."""

    name: str = "run"
    task: str = "classification"
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    output_dir: str | None = Field(default=None, validation_alias=AliasChoices("output_dir", "out", "output"))
    model: ModelSpec = Field(validation_alias=AliasChoices("model", "student"))
    teachers: dict[str, ModelSpec] = Field(default_factory=dict)
    jobs: list[DistillJob] = Field(default_factory=list, validation_alias=AliasChoices("jobs", "mimic_jobs"))
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: distilling from a teacher without ``weights`` is an error unless this is true (tests, smoke runs)
    allow_untrained_teacher: bool = False

    @property
    def run_dir(self) -> Path:
        """``output_dir`` or ``runs/<name>``."""
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dump (for checkpoints and summaries); jobs holding live modules are summarised."""
        try:
            return self.model_dump(mode="json")
        except Exception:  # a job built with an nn.Module loss or connector
            return self.model_dump(mode="json", exclude={"jobs"}) | {"jobs": [repr(j) for j in self.jobs]}


def load_run_config(cfg: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """Validate a YAML path / dict as a :class:`RunConfig` after ``key.path=value`` overrides."""
    return load(RunConfig, cfg, overrides)
