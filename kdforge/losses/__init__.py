"""Distillation losses, one module per family; importing registers them in ``LOSSES``."""
from . import base, feature, ofd, response  # noqa: F401  (registration)
from . import crd, relation  # noqa: F401  (registration)
from . import ft, mgd, vid  # noqa: F401  (registration)
from . import dense, detection  # noqa: F401  (registration)
from . import adversarial, selfdistill  # noqa: F401  (registration)
from . import hidden, sequence  # noqa: F401  (registration)
from .base import DistillLoss, LossArgumentError, ShapeMismatchError, check_temperature

__all__ = ["DistillLoss", "LossArgumentError", "ShapeMismatchError", "check_temperature"]
