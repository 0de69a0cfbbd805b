"""Configs: pydantic schema, YAML loading, and translators from other toolboxes' configs."""
from .loading import ConfigError, apply_overrides, deep_merge, load, read_config, read_yaml, validate
from .schema import DistillConfig, ModelSpec

__all__ = ["ConfigError", "DistillConfig", "ModelSpec", "apply_overrides", "deep_merge", "load", "read_config",
           "read_yaml", "validate"]
