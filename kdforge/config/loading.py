"""Read configs from YAML files or dicts, with dotted ``key=value`` overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .safe_yaml import YAMLLimitError, load_yaml

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field path."""


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = load_yaml(p.read_bytes(), str(p))
    except YAMLLimitError as e:
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a YAML mapping at top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: numbers, bools, lists).

    List items are addressed by index (``jobs.0.weight=0.5``); a path through a value that is not a
    mapping or list, or an index out of range, is a :class:`ConfigError` naming the override.
    """
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item[:200]!r} must look like key.path=value (e.g. train.epochs=3)")
        node: Any = data
        parts = key.split(".")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "the config"
            if isinstance(node, list):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise ConfigError(f"override {key!r}: {where} is a list of {len(node)} item(s); {part!r} is "
                                      f"not an index in 0..{len(node) - 1}")
                if last:
                    break
                node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    break
                node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {key!r}: {where} is {type(node).__name__} {repr(node)[:60]}, not a "
                                  f"mapping, so it has no field {part!r}")
        try:
            value = load_yaml(raw, f"override {key!r}")
        except YAMLLimitError as e:
            raise ConfigError(str(e)) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
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
