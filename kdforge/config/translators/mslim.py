"""mslim (Midea) distiller config dicts → kdforge jobs.

Shape read (``mslim/algorithms/pytorch/distillation/distiller.py``)::

    config = {
        'student_model': modelS, 'teacher_model': modelT,
        'student_distill_layer': ['layer1', 'layer2'], 'teacher_distill_layer': ['layer1', 'layer2'],
        'loss': [dict(type='vid', ...), dict(type='vid', ...)],   # one per layer pair …
        'weights': [1.0, 1.0],                                     # … with its weight
        'student_out_layer': ['linear'], 'device': device,
    }

One loss per layer pair gives one job per pair; a single loss over several layers (mslim's IRG)
gives one job over all the taps. ``student_out_layer`` is the module whose output mslim's
Distiller returns; kdforge returns the student's own ``forward()`` output. When a config also
names ``teacher_out_layer``, a ``kd`` job between the two output layers is added.
"""
from __future__ import annotations

from typing import Any, Mapping

from .common import TranslationError, as_list, is_expr, make_loss, model_placeholder_warning, unique, warn


def matches(data: Mapping[str, Any]) -> bool:
    return "student_distill_layer" in data and "teacher_distill_layer" in data


def _model(value: Any, fallback: str) -> dict[str, Any]:
    return {"name": value if isinstance(value, str) and value and not is_expr(value) else fallback}


def translate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A kdforge config dict from an mslim distiller config."""
    s_layers = [str(x) for x in as_list(data.get("student_distill_layer"), "student_distill_layer")]
    t_layers = [str(x) for x in as_list(data.get("teacher_distill_layer"), "teacher_distill_layer")]
    if len(s_layers) != len(t_layers):
        raise TranslationError(f"student_distill_layer has {len(s_layers)} layers but teacher_distill_layer has "
                               f"{len(t_layers)}; mslim pairs them by position, so give the same number")
    losses = as_list(data.get("loss"), "loss (a list of dict(type=..., **kwargs))")
    weights = data.get("weights")
    weights = [1.0] * len(losses) if weights is None else as_list(weights, "weights")
    if len(weights) != len(losses):
        raise TranslationError(f"weights has {len(weights)} entries for {len(losses)} losses; give one weight per loss")
    if len(losses) == len(s_layers):
        groups = [([s], [t]) for s, t in zip(s_layers, t_layers)]
    elif len(losses) == 1:
        groups = [(s_layers, t_layers)]
    else:
        raise TranslationError(f"{len(losses)} losses for {len(s_layers)} layer pairs: give one loss per pair, or one "
                               f"loss over all layers (as mslim's IRG)")

    jobs: list[dict[str, Any]] = []
    taken: set[str] = set()
    for i, (loss_cfg, w, (s, t)) in enumerate(zip(losses, weights, groups)):
        where = f"loss[{i}]"
        if isinstance(loss_cfg, str):
            loss_cfg = {"type": loss_cfg}
        if not isinstance(loss_cfg, Mapping) or "type" not in loss_cfg:
            raise TranslationError(f"{where} must be dict(type=NAME, **kwargs), got {loss_cfg!r}")
        kwargs = {k: v for k, v in loss_cfg.items() if k != "type"}
        loss, factor = make_loss(str(loss_cfg["type"]), kwargs, where)
        mapped = loss if isinstance(loss, str) else loss["type"]
        if mapped == "irg":
            warn(f"{where}: mslim's IRG adds the average-pooled second layer as an extra vertex; kdforge's irg "
                 f"uses the taps as given — add a tap on the pooled features to build the same graph")
        jobs.append({"name": unique(f"{mapped}_{s[0]}" if len(s) == 1 else str(mapped), taken),
                     "teachers": ["teacher"], "student": s, "teacher": t, "loss": loss,
                     "weight": float(w) * factor})

    s_out = data.get("student_out_layer")
    t_out = data.get("teacher_out_layer")
    if s_out and t_out:
        s_tap, t_tap = str(as_list(s_out, "student_out_layer")[0]), str(as_list(t_out, "teacher_out_layer")[0])
        if not any(j["student"] == [s_tap] and j["teacher"] == [t_tap] for j in jobs):
            jobs.append({"name": unique("kd_out", taken), "teachers": ["teacher"], "student": [s_tap],
                         "teacher": [t_tap], "loss": "kd", "weight": 1.0})
    student = _model(data.get("student_model"), "student")
    teacher = _model(data.get("teacher_model"), "teacher")
    model_placeholder_warning(student["name"], {"teacher": teacher["name"]})
    return {"student": student, "teachers": {"teacher": teacher}, "jobs": jobs}
