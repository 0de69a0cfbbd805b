"""Tasks: batch format, criterion and metrics per problem type; registered in ``TASKS``."""
from ..registry import TASKS
from .base import Meter, Task
from . import classification, detection, language_modeling, segmentation  # noqa: F401  (registration)

__all__ = ["TASKS", "Meter", "Task"]
