"""Pydantic schema of a training run: the model, teachers and jobs, data, optimisation, checkpoints.

One YAML file drives ``kdforge train`` and :func:`kdforge.build_distiller` (which reads only the
student, teachers and jobs)::

    name: fmnist_kd
    base: [../_base/fmnist_data.yaml]        # optional: files this one extends (see loading.py)
    student: {name: resnet8, kwargs: {num_classes: 10, in_channels: 1}}     # alias: model
    teachers:
      t0: {name: resnet32x4, kwargs: {num_classes: 10, in_channels: 1}, weights: runs/fmnist_teacher/best.pt}
    jobs:
      - {name: kd, loss: {type: kd, T: 4}, student: "", teacher: "", weight: 0.9}
    data: {name: fashion_mnist, batch_size: 128}
    train: {epochs: 10, ce_weight: 0.1, optimizer: {name: sgd, lr: 0.05, momentum: 0.9}, schedule: cosine}

No ``jobs`` means plain training of the student (a teacher, or a baseline student). Every name
(model, loss, connector, dataset, task, optimizer, schedule) and its keyword arguments are checked
against the registered builders when the config is validated, before any data is read.

Loss weighting. The training loss is ``train.ce_weight * task_loss + Σ job.weight * job_loss``.
Hinton-style ``alpha`` recipes (``(1 - alpha) * CE + alpha * KD``) translate to
``ce_weight: 1 - alpha`` and the KD job's ``weight: alpha``; ``task_weight`` is accepted as an alias
of ``ce_weight``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, model_serializer, model_validator

from .loading import load
from .schema import DistillConfig, _Strict


class DataConfig(_Strict):
    """Which dataset (a name in :data:`kdforge.DATASETS` or ``"package.module:callable"``; no default)
    and how to load it; ``kwargs`` are the dataset builder's keyword arguments.

    ``batch_size`` is the *global* batch: under ``torchrun`` each of the N processes loads
    ``batch_size / N`` samples, so a recipe trains the same way on any number of processes.
    """

    name: str
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

    @model_validator(mode="after")
    def _known(self) -> "DataConfig":
        from .. import engine  # noqa: F401  (registers the built-in dataset builders)
        from ..registry import DATASETS

        DATASETS.check_args(self.name, self.kwargs)
        return self


class _NamedCall(_Strict):
    """``{name: X, **keyword arguments of X}`` — flat in YAML, ``name`` + ``kwargs`` here."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v}
        if isinstance(v, dict):
            kwargs = {k: x for k, x in v.items() if k not in ("name", "kwargs")}
            return {"name": v.get("name"), "kwargs": {**kwargs, **(v.get("kwargs") or {})}} if "name" in v \
                else {"kwargs": {**kwargs, **(v.get("kwargs") or {})}}
        return v

    @model_serializer
    def _dump(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}


class OptimizerConfig(_NamedCall):
    """Any ``torch.optim`` optimiser by lower-case name (``sgd``, ``adamw``, ``adam``, …) or
    ``"package.module:callable"``, with its keyword arguments; missing ones take *that optimiser's*
    defaults (see :mod:`kdforge.engine.optim`). Without a ``train.optimizer`` section a run uses
    SGD with lr 0.05, momentum 0.9, weight decay 5e-4 (the CIFAR distillation recipe)."""

    @model_validator(mode="after")
    def _known(self) -> "OptimizerConfig":
        from ..engine.optim import check_optimizer

        check_optimizer(self.name, self.kwargs)
        return self


class ScheduleConfig(_NamedCall):
    """Per-iteration LR schedule by name (see :mod:`kdforge.engine.schedule`): ``cosine`` (``min_lr``,
    ``warmup_epochs``), ``step`` (``milestones``, ``gamma``, ``warmup_epochs``), ``onecycle``
    (``pct_start``, ``div_factor``, ``min_lr``), ``none`` (``warmup_epochs``), or your own registered in
    :data:`kdforge.SCHEDULES`. Without a ``train.schedule`` section: ``cosine``."""

    @model_validator(mode="after")
    def _known(self) -> "ScheduleConfig":
        from ..engine.schedule import check_schedule

        check_schedule(self.name, self.kwargs)
        return self


DEFAULT_OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}


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
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig.model_validate(DEFAULT_OPTIMIZER))
    schedule: ScheduleConfig = Field(default_factory=lambda: ScheduleConfig(name="cosine"))
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


class RunConfig(DistillConfig):
    """A complete training run: the distillation set-up (``student``/``model``, ``teachers``, ``jobs``)
    plus task, data, training and checkpoint sections; see the module docstring for an example."""

    name: str = "run"
    task: str = "classification"
    task_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    output_dir: str | None = Field(default=None, validation_alias=AliasChoices("output_dir", "out", "output"))
    imports: list[str] = Field(default_factory=list)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: distilling from a teacher without ``weights`` is an error unless this is true (tests, smoke runs)
    allow_untrained_teacher: bool = False
    #: a teacher-output cache (``kdforge cache build``): replay its views, read the teachers' tensors from it
    teacher_cache: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _imports_and_data(cls, v: Any) -> Any:
        """Import ``imports:`` (user registrations) before anything is validated; require ``data:``."""
        if not isinstance(v, dict):
            return v
        from ..engine.user_data import import_module, import_modules

        imports = v.get("imports") or []
        import_modules([imports] if isinstance(imports, str) else imports)
        data = v.get("data")
        if data is None:
            from .. import engine  # noqa: F401  (registers the built-in datasets)
            from ..registry import DATASETS

            raise ValueError(
                "a run config needs a data: section naming the dataset to train on (there is no default), e.g. "
                "data: {name: image_folder, root: DIR}. Registered datasets: " + ", ".join(DATASETS.names())
                + "; or your own builder as data: {name: 'package.module:callable'} (see docs/datasets.md)")
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str) and ":" in name:  # found on sys.path or in the current directory
            import_module(name.partition(":")[0], f"data.name {name!r}")
        return v

    @model_validator(mode="after")
    def _known_task(self) -> "RunConfig":
        from .. import tasks  # noqa: F401  (registers the built-in tasks)
        from ..registry import TASKS

        try:
            TASKS.check_args(self.task, self.task_kwargs)
        except ValueError as e:
            raise ValueError(f"task: {e}") from None
        return self

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


def load_run_config(cfg: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None,
                    given_models: list[str] | None = None) -> RunConfig:
    """Validate a YAML path / dict as a :class:`RunConfig` after ``key.path=value`` overrides;
    ``given_models`` (``"student"``, teacher names) are passed as modules, so their specs are not checked."""
    return load(RunConfig, cfg, overrides, {"given_models": given_models or []})
