"""Read configs from YAML files or dicts, with dotted ``key=value`` overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field path."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: numbers, bools, lists)."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        node: Any = data
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return data


def validate(model: type[M], data: Any, source: str = "config") -> M:
    """``model.model_validate(data)`` with an error listing each failing field path."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError(f"invalid {source} ({model.__name__}):\n" + "\n".join(lines)) from None


def load(model: type[M], cfg: str | Path | dict[str, Any] | M, overrides: list[str] | None = None) -> M:
    """Validate a YAML path / dict / model instance as ``model``, after applying overrides."""
    if isinstance(cfg, model) and not overrides:
        return cfg
    if isinstance(cfg, (str, Path)):
        data, source = read_yaml(cfg), str(cfg)
    elif isinstance(cfg, BaseModel):
        data, source = cfg.model_dump(by_alias=False), "config"
    else:
        data, source = dict(cfg), "config"
    return validate(model, apply_overrides(data, overrides), source)
