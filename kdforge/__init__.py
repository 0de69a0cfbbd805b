"""kdforge — knowledge distillation for PyTorch.

Distillation = taps on models + jobs that compare tapped tensors with a loss.
"""
from . import losses  # noqa: F401  (registers the loss zoo)
from .connectors import Connector, build_connector
from .registry import CONNECTORS, LOSSES, MODELS, Registry, RegistryError

__version__ = "0.1.0"

__all__ = [
    "CONNECTORS",
    "Connector",
    "LOSSES",
    "MODELS",
    "Registry",
    "RegistryError",
    "build_connector",
]
