"""Live-module config dicts of other toolboxes → a Distiller's ``(student, teachers, jobs)``.

mslim's ``Distiller(config)`` takes one dict holding the models themselves::

    config = {'student_model': modelS, 'teacher_model': modelT,
              'student_distill_layer': ['layer1'], 'teacher_distill_layer': ['layer1'],
              'loss': [dict(type='vid')], 'weights': [1.0], 'student_out_layer': ['linear'], 'device': device}
    distiller = kdforge.Distiller(config)          # or kdforge.build_distiller(config)

The models are taken out, the rest is translated like ``kdforge convert`` does (mslim keys, or a
United-Perception ``mimic:`` block next to the models), and the Distiller is built on the live
modules (moved to ``device`` when given). Anything that cannot be read fails with an error that shows
the kdforge call to write instead.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

from torch import nn

STUDENT_KEYS = ("student_model", "student", "model_s", "modelS")
TEACHER_KEYS = ("teacher_model", "teacher", "teacher_models", "teachers", "model_t", "modelT")

_KDFORGE_WAY = ("the kdforge call: Distiller(student, {'t0': teacher}, jobs=[DistillJob(loss='kd', student='fc', "
                "teacher='fc', weight=1.0)]) — or a config dict with 'student'/'teachers' specs and 'jobs' for "
                "build_distiller (see README 'From a config')")


def _has_module(value: Any) -> bool:
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, nn.Module) for v in value)
    if isinstance(value, Mapping):
        return any(isinstance(v, nn.Module) for v in value.values())
    return False


def is_live_config(data: Any) -> bool:
    """A mapping that holds ``nn.Module`` objects under a student/teacher key (not a kdforge spec dict)."""
    return isinstance(data, Mapping) and any(_has_module(data.get(k)) for k in STUDENT_KEYS + TEACHER_KEYS)


def _teachers(value: Any) -> list[nn.Module]:
    if isinstance(value, nn.Module):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, nn.Module) for v in value):
        return list(value)
    raise TypeError(f"the teacher entry holds {type(value).__name__}; give the teacher nn.Module (or a list of them)")


def from_live_config(data: Mapping[str, Any]) -> tuple[nn.Module, dict[str, nn.Module], list[dict[str, Any]], Any]:
    """``(student, teachers by name, job dicts, device or None)`` from a live-module config dict."""
    from .config.translate import translate
    from .config.translators import TranslationError
    from .distiller import DistillerError

    s_key = next((k for k in STUDENT_KEYS if isinstance(data.get(k), nn.Module)), None)
    t_key = next((k for k in TEACHER_KEYS if _has_module(data.get(k))), None)
    if s_key is None or t_key is None:
        missing = "student" if s_key is None else "teacher"
        raise DistillerError(f"this config dict holds models but no {missing} nn.Module: put it under "
                             f"'{missing}_model' (mslim's key). Keys given: {sorted(map(str, data))}. Or use "
                             + _KDFORGE_WAY)
    student = data[s_key]
    try:
        live_teachers = _teachers(data[t_key])
    except TypeError as e:
        raise DistillerError(f"{t_key!r}: {e}") from None
    rest = {k: v for k, v in data.items() if k not in STUDENT_KEYS + TEACHER_KEYS + ("device",)}
    rest.update(student_model="student", teacher_model="teacher")  # placeholders: the real ones are live
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="models are named after the source config")
            cfg = translate(rest)
    except TranslationError as e:
        raise DistillerError(f"cannot read this config dict as an mslim or United-Perception distillation config: "
                             f"{e}\nWrite it as " + _KDFORGE_WAY) from None
    names = list(cfg["teachers"])
    if len(names) != len(live_teachers):
        raise DistillerError(f"the config's jobs name {len(names)} teacher(s) {names} but {len(live_teachers)} "
                             f"teacher module(s) were given under {t_key!r}; give one module per teacher, in order")
    return student, dict(zip(names, live_teachers)), cfg["jobs"], data.get("device")


__all__ = ["STUDENT_KEYS", "TEACHER_KEYS", "from_live_config", "is_live_config"]
