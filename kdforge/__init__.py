"""kdforge — knowledge distillation for PyTorch.

Distillation = taps on models + jobs that compare tapped tensors with a loss.

``import kdforge`` fills every registry: LOSSES, CONNECTORS, MODELS, TASKS, DATASETS, OPTIMIZERS
and SCHEDULES.
"""
from . import losses, models, tasks  # noqa: F401  (registers the loss zoo, the model zoo, the tasks)
from .build import build_distiller
from .capture import TapError, Tapper, emit
from .config import ConfigError, DistillConfig
from .connectors import Connector, build_connector
from .distiller import Distiller, DistillerError
from .job import DistillJob
from .losses import DistillLoss, ShapeMismatchError
from .registry import CONNECTORS, DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULES, TASKS, Registry, RegistryError
from . import engine  # noqa: F401,E402  (registers datasets, optimisers and schedules)

__version__ = "0.1.0"


def load_config(cfg, overrides=None) -> DistillConfig:  # type: ignore[no-untyped-def]
    """Validate a config (YAML path or dict): a :class:`~kdforge.config.run.RunConfig` when it has
    training sections (``data``, ``train``, …), else a :class:`DistillConfig`."""
    from .build import load_distill_config

    return load_distill_config(cfg, overrides)


__all__ = [
    "CONNECTORS", "ConfigError", "Connector", "DATASETS", "DistillConfig", "DistillJob", "DistillLoss", "Distiller",
    "DistillerError", "LOSSES", "MODELS", "OPTIMIZERS", "Registry", "RegistryError", "SCHEDULES",
    "ShapeMismatchError", "TASKS", "TapError", "Tapper", "build_connector", "build_distiller", "emit", "load_config",
]
