"""Read configs from YAML files or dicts: ``base:`` inheritance, dotted ``key=value`` overrides.

Inheritance: a config may list files it extends, relative to itself::

    base: [../_base/fmnist_data.yaml, ../_base/fmnist_train.yaml]   # or one path as a string
    jobs: [...]

Bases are read in order (each may have bases of its own), deep-merged — mappings merge key by key,
every other value (lists included) is replaced — and the file's own keys are merged last. A cycle
is an error naming the chain. ``kdforge show CONFIG`` prints the merged, validated result.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .safe_yaml import YAMLLimitError, load_yaml
from ..registry import closest

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field path."""


BASE_KEYS = ("base", "_base_")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings recursively, anything else replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_bases(data: dict[str, Any], here: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """``data`` with its ``base:`` files (paths relative to ``here``) merged underneath."""
    bases = next((data[k] for k in BASE_KEYS if k in data), None)
    data = {k: v for k, v in data.items() if k not in BASE_KEYS}
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"base: must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for b in bases:
        path = (here / b).resolve()
        if path in chain:
            cycle = " -> ".join(str(p) for p in (*chain[chain.index(path):], path))
            raise ConfigError(f"base: configs inherit from each other in a cycle: {cycle}")
        if not path.is_file():
            raise ConfigError(f"base: {b!r} (resolved to {path}) does not exist; base paths are relative to the "
                              f"file that names them")
        merged = deep_merge(merged, resolve_bases(read_yaml(path), path.parent, (*chain, path)))
    return deep_merge(merged, data)


def read_config(path: str | Path) -> dict[str, Any]:
    """A YAML config with its ``base:`` files merged in."""
    p = Path(path).resolve()
    return resolve_bases(read_yaml(p), p.parent, (p,))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping (no ``base:`` resolution; see :func:`read_config`)."""
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


def validate(model: type[M], data: Any, source: str = "config", context: dict[str, Any] | None = None) -> M:
    """``model.model_validate(data)`` with an error listing each failing field path. ``context``:
    ``{"given_models": [...]}`` names models handed over as modules (their specs are not checked)."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = _clean(err["msg"])
            if err["type"] == "extra_forbidden" and err["loc"]:
                hint = closest(str(err["loc"][-1]), sorted(field_names(model)), n=1)
                msg += f"; did you mean {hint[0]!r}?" if hint else ""
            lines.append(f"  {field_path(err['loc'])}: {msg}")
        raise ConfigError(f"invalid {source} ({model.__name__}):\n" + "\n".join(lines)) from None


def field_names(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    """Every field name and alias in ``model`` and the models nested in it (for did-you-mean)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, f in model.model_fields.items():
        names.add(name)
        choices = getattr(f.validation_alias, "choices", None) or []
        names.update(c for c in choices if isinstance(c, str))
        for sub in _models_in(f.annotation):
            names |= field_names(sub, seen)
    return names


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in getattr(tp, "__args__", ()) or () for m in _models_in(arg)]


def field_path(loc: tuple[Any, ...]) -> str:
    """``('jobs', 0, 'loss')`` → ``jobs[0].loss``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def load(model: type[M], cfg: str | Path | dict[str, Any] | M, overrides: list[str] | None = None,
         context: dict[str, Any] | None = None) -> M:
    """Validate a YAML path / dict / model instance as ``model``, after applying overrides."""
    if isinstance(cfg, model) and not overrides:
        return cfg
    if isinstance(cfg, (str, Path)):
        data, source = read_config(cfg), str(cfg)
    elif isinstance(cfg, BaseModel):
        data, source = cfg.model_dump(by_alias=False), "config"
    else:
        data, source = resolve_bases(dict(cfg), Path.cwd()), "config"
    return validate(model, apply_overrides(data, overrides), source, context)
