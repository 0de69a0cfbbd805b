"""``build_distiller``: a Distiller from a config (dict, YAML file, DistillConfig or RunConfig).

This is the one place where teachers are built and their weights loaded; the trainer calls it too.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from .config import ConfigError, DistillConfig, ModelSpec, load, read_config
from .distiller import Distiller, DistillerError


class UntrainedTeacherWarning(UserWarning):
    """A teacher built without weights: distilling from it teaches noise."""


def build_model_from_spec(spec: ModelSpec, where: str = "model") -> nn.Module:
    """Build the model a :class:`ModelSpec` names and load its weights, if any; errors name ``where``."""
    from .models import build_model, load_weights  # the zoo registers on import

    try:
        model = build_model(spec.name, **spec.kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: cannot build {spec.name!r} with kwargs {spec.kwargs}: {e}") from e
    except (ImportError, AttributeError) as e:  # "package.module:callable" that does not resolve
        raise ConfigError(f"{where}: cannot import model {spec.name!r}: {e}") from e
    if spec.weights:
        load_weights(model, spec.weights, strict=spec.strict, key=spec.weights_key)
    if spec.dtype is not None:  # after the weights: they load at full precision, then convert
        model.to(getattr(torch, spec.dtype))
    return model


def load_distill_config(cfg: str | Path | Mapping[str, Any] | DistillConfig, overrides: list[str] | None = None,
                        given_models: Iterable[str] = ()) -> DistillConfig:
    """Validate a config as a :class:`DistillConfig`; a run config (one with ``data``, ``train``, … sections)
    is validated whole as a :class:`~kdforge.config.run.RunConfig`, which *is* a DistillConfig.
    ``given_models`` (``"student"``, teacher names) are models the caller passes as modules."""
    from .config.run import RunConfig

    if isinstance(cfg, DistillConfig) and not overrides:
        return cfg
    data: Any = cfg
    if isinstance(cfg, (str, Path)):
        data = read_config(cfg)
    elif isinstance(cfg, DistillConfig):
        data = cfg.model_dump()
    run_only = set(RunConfig.model_fields) - set(DistillConfig.model_fields)
    schema = RunConfig if isinstance(data, Mapping) and run_only & set(data) else DistillConfig
    return load(schema, data if not isinstance(cfg, (str, Path)) else cfg, overrides,
                {"given_models": list(given_models)})


def build_teachers(dc: DistillConfig, given: Mapping[str, nn.Module] | None = None,
                   warn: Callable[[str], None] | None = None) -> dict[str, nn.Module]:
    """The config's teachers (built, weights loaded), with ``given`` modules replacing or adding some."""
    given = dict(given or {})
    out: dict[str, nn.Module] = {}
    for name, spec in dc.teachers.items():
        if name in given:
            out[name] = given.pop(name)
            continue
        if not spec.weights:
            msg = f"teacher {name!r} ({spec.name}) has no weights: distilling from an untrained teacher"
            (warn or (lambda m: warnings.warn(m, UntrainedTeacherWarning, stacklevel=3)))(msg)
        with torch.random.fork_rng(devices=[]):  # building a teacher must not shift the run's random stream
            out[name] = build_model_from_spec(spec, f"teachers.{name}")
    out.update(given)
    return out


def build_distiller(cfg: str | Path | Mapping[str, Any] | DistillConfig, *, student: nn.Module | None = None,
                    teachers: Mapping[str, nn.Module] | None = None, overrides: list[str] | None = None,
                    warn: Callable[[str], None] | None = None) -> Distiller:
    """A :class:`Distiller` from a config; ``student``/``teachers`` given here replace the config's models.

    A full training config (``kdforge train``'s) is accepted: its training sections are validated
    and otherwise ignored here. So is an mslim-style dict holding the models themselves
    (``{'student_model': s, 'teacher_model': t, 'student_distill_layer': [...], ...}``; see
    :mod:`kdforge.compat`).
    """
    from .compat import is_live_config

    if is_live_config(cfg):  # an mslim-style dict holding the models themselves
        if student is not None or teachers or overrides:
            raise DistillerError("build_distiller(config_dict_with_models) takes the models from the dict; do not "
                                 "also pass student=/teachers=/overrides=")
        return Distiller(cfg)  # type: ignore[arg-type]
    given = (["student"] if student is not None else []) + list(teachers or {})
    dc = load_distill_config(cfg, overrides, given)
    s = student if student is not None else build_model_from_spec(dc.student, "student")
    ts = build_teachers(dc, teachers, warn)
    try:
        return Distiller(s, ts, dc.jobs, teacher_exec=dc.teacher_exec,
                         teacher_devices={n: spec.device for n, spec in dc.teachers.items()
                                          if spec.device is not None and n not in (teachers or {})})
    except (TypeError, KeyError) as e:  # a loss/connector built with arguments it does not take
        raise ConfigError(f"jobs: {e}") from e
