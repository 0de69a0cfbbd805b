"""``build_distiller``: a Distiller from a config dict / YAML file (or a validated DistillConfig)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from .config import DistillConfig, ModelSpec, load
from .distiller import Distiller


def build_model_from_spec(spec: ModelSpec) -> nn.Module:
    """Build the model a :class:`ModelSpec` names and load its weights, if any."""
    from .models import build_model, load_weights  # the zoo registers on import

    model = build_model(spec.name, **spec.kwargs)
    if spec.weights:
        load_weights(model, spec.weights, strict=spec.strict, key=spec.weights_key)
    return model


def build_distiller(cfg: str | Path | Mapping[str, Any] | DistillConfig, *, student: nn.Module | None = None,
                    teachers: Mapping[str, nn.Module] | None = None, overrides: list[str] | None = None) -> Distiller:
    """A :class:`Distiller` from a config; ``student``/``teachers`` given here replace the config's models.

    A config with a ``distill:`` section (a full training config) is accepted too.
    """
    data: Any = cfg
    if isinstance(cfg, (str, Path)):
        from .config import read_yaml
        data = read_yaml(cfg)
    if isinstance(data, Mapping) and "distill" in data and "jobs" not in data:
        data = {"student": data.get("model") or data.get("student"), **data["distill"]}
    dc = load(DistillConfig, data if not isinstance(cfg, DistillConfig) else cfg, overrides)
    s = student if student is not None else build_model_from_spec(dc.student)
    given = dict(teachers or {})
    ts = {name: given.pop(name) if name in given else build_model_from_spec(spec) for name, spec in dc.teachers.items()}
    ts.update(given)
    return Distiller(s, ts, dc.jobs, teacher_exec=dc.teacher_exec)
