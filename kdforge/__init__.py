"""kdforge — knowledge distillation for PyTorch.

Distillation = taps on models + jobs that compare tapped tensors with a loss.
"""
from . import losses, models  # noqa: F401  (registers the loss zoo and the model zoo)
from . import token_connectors  # noqa: F401  (registers token_linear)
from .build import build_distiller
from .capture import TapError, Tapper, emit
from .config import ConfigError, DistillConfig
from .config import load as _load
from .connectors import Connector, build_connector
from .distiller import Distiller, DistillerError
from .job import DistillJob
from .losses import DistillLoss, ShapeMismatchError
from .registry import CONNECTORS, LOSSES, MODELS, Registry, RegistryError

__version__ = "0.1.0"


def load_config(cfg, overrides=None) -> DistillConfig:  # type: ignore[no-untyped-def]
    """Validate a distillation config (YAML path or dict) into a :class:`DistillConfig`."""
    return _load(DistillConfig, cfg, overrides)


__all__ = [
    "CONNECTORS", "ConfigError", "Connector", "DistillConfig", "DistillJob", "DistillLoss", "Distiller",
    "DistillerError", "LOSSES", "MODELS", "Registry", "RegistryError", "ShapeMismatchError", "TapError",
    "Tapper", "build_connector", "build_distiller", "emit", "load_config",
]
