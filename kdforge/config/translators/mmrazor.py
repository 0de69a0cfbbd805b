"""MMRazor (1.x and 0.x) and GML-style ``distill_cfg`` configs → kdforge jobs.

Three shapes, all of the OpenMMLab ``dict(...)`` family:

* **MMRazor 1.x** ``model=dict(type='SingleTeacherDistill', architecture=..., teacher=..., teacher_ckpt=...,
  distiller=dict(type='ConfigurableDistiller', student_recorders=..., teacher_recorders=...,
  distill_losses=dict(loss_x=dict(type=..., loss_weight=...)), connectors=..., loss_forward_mappings=...))``:
  one job per entry of ``distill_losses``; its taps are the recorders its forward mapping names.
* **MMRazor 0.x** ``algorithm=dict(type='GeneralDistill', architecture=dict(model=student),
  distiller=dict(type='SingleTeacherDistiller', teacher=..., components=[dict(student_module=...,
  teacher_module=..., losses=[dict(type=..., name=..., loss_weight=...)])]))``.
* **GML-style** (mmsegmentation-distiller, FGD, MGD, cls_KD): ``distiller=dict(teacher_pretrained=...,
  distill_cfg=[dict(student_module=..., teacher_module=..., output_hook=True, methods=[dict(type=...,
  name=..., tau=..., loss_weight|weight=...)])])`` with ``student_cfg``/``teacher_cfg`` beside it.
"""
from __future__ import annotations

from typing import Any, Mapping

from ...registry import CONNECTORS
from .common import TranslationError, make_loss, model_placeholder_warning, unique, warn

#: forward-mapping arguments that carry labels, which kdforge hands every loss as ctx["labels"]
_LABEL_ARGS = {"gt_labels", "gt_label", "labels", "data_samples"}


def _distiller(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for holder in (data, data.get("model"), data.get("algorithm")):
        if isinstance(holder, Mapping) and isinstance(holder.get("distiller"), Mapping):
            return holder["distiller"]
    if any(k in data for k in ("distill_cfg", "components", "distill_losses")):
        return data
    return None


def matches(data: Mapping[str, Any]) -> bool:
    d = _distiller(data)
    return d is not None and any(k in d for k in ("distill_cfg", "components", "distill_losses"))


def _model_name(cfg: Any, fallback: str) -> str:
    """``cfg_path``, a config file path, or ``type/backbone-type+depth`` of an mm model dict."""
    if isinstance(cfg, str):
        return cfg
    if isinstance(cfg, Mapping):
        if isinstance(cfg.get("model"), Mapping):  # 0.x architecture=dict(type='MMSegArchitecture', model=...)
            return _model_name(cfg["model"], fallback)
        if cfg.get("cfg_path"):
            return str(cfg["cfg_path"])
        bb = cfg.get("backbone")
        if isinstance(bb, Mapping) and bb.get("type"):
            return f"{cfg.get('type', 'model')}/{bb['type']}{bb.get('depth', '')}"
        if cfg.get("type"):
            return str(cfg["type"])
    return fallback


def _checkpoint(cfg: Any) -> str | None:
    init = cfg.get("init_cfg") if isinstance(cfg, Mapping) else None
    if isinstance(init, Mapping) and init.get("checkpoint"):
        return str(init["checkpoint"])
    return None


def _spec(name: str, weights: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name}
    if isinstance(weights, str) and weights:
        spec.update(weights=weights, weights_key="state_dict")  # mm checkpoints: {'meta', 'state_dict'}
    return spec


def _connector(cfg: Mapping[str, Any], where: str) -> Any:
    """A kdforge connector spec for an MMRazor student connector config."""
    typ = str(cfg.get("type", ""))
    if typ in ("ConvModuleConncetor", "ConvModuleConnector"):  # MMRazor's registered name has the typo
        k, bn = int(cfg.get("kernel_size", 1)), cfg.get("norm_cfg") is not None
        relu = cfg.get("act_cfg", {"type": "ReLU"}) is not None
        if k == 3:
            if not bn:
                warn(f"{where}: 3x3 connector without norm becomes kdforge's 'conv3x3_bn' (with BatchNorm)")
            return {"type": "conv3x3_bn", "relu": relu} if relu else "conv3x3_bn"
        if k != 1:
            warn(f"{where}: {k}x{k} connector becomes a 1x1 one (kdforge has conv1x1[_bn] and conv3x3_bn)")
        if relu:
            warn(f"{where}: the connector's activation ({cfg.get('act_cfg', {'type': 'ReLU'})}) is dropped: "
                 f"kdforge's conv1x1 connectors are linear")
        return "conv1x1_bn" if bn else "conv1x1"
    if typ.lower() in CONNECTORS:
        return typ.lower()
    warn(f"{where}: connector type {typ!r} has no kdforge equivalent the translator knows; kept as is "
         f"(registered: {', '.join(CONNECTORS.names())})")
    return dict(cfg)


def _tap(recorders: Mapping[str, Any], rec_name: str, arg: Mapping[str, Any], where: str) -> str:
    rec = recorders.get(rec_name)
    if not isinstance(rec, Mapping):
        raise TranslationError(f"{where}: recorder {rec_name!r} is not defined; defined: {sorted(recorders)}")
    typ, source = rec.get("type", "ModuleOutputs"), str(rec.get("source", ""))
    if arg.get("record_idx") not in (None, 0):
        warn(f"{where}: record_idx={arg['record_idx']} picks call {arg['record_idx']} of {source!r}; a kdforge tap "
             f"keeps the module's last call in a forward pass — check that it is the same one")
    if arg.get("data_idx") is not None:
        warn(f"{where}: data_idx={arg['data_idx']} picks one element of {source!r}'s output; kdforge taps the "
             f"whole output: tap a submodule that returns that tensor, or emit it with kdforge.capture.emit")
    if typ == "ModuleOutputs":
        return source
    if typ == "ModuleInputs":
        return f"{source}:input"
    if typ == "MethodOutputs":
        warn(f"{where}: MethodOutputs source {source!r} is a class path; kdforge's ':return' taps need the "
             f"method's path on the model instance (e.g. 'head.pre_logits:return')")
        return f"{source}:return"
    warn(f"{where}: recorder type {typ!r} ({source!r}) has no kdforge tap; it becomes '@{rec_name}': hand the "
         f"tensor over with kdforge.capture.emit({rec_name!r}, tensor)")
    return f"@{rec_name}"


def _from_losses_1x(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    s_rec, t_rec = d.get("student_recorders") or {}, d.get("teacher_recorders") or {}
    connectors, mappings = d.get("connectors") or {}, d.get("loss_forward_mappings") or {}
    jobs, taken = [], set()
    for key, cfg in (d.get("distill_losses") or {}).items():
        where = f"distiller.distill_losses.{key}"
        mapping = mappings.get(key)
        if not isinstance(mapping, Mapping):
            raise TranslationError(f"{where}: no loss_forward_mappings.{key} says which recorders feed this loss")
        student, teacher, conns = [], [], []
        for arg_name, arg in mapping.items():
            at = f"distiller.loss_forward_mappings.{key}.{arg_name}"
            if arg_name in _LABEL_ARGS:
                continue  # kdforge passes labels to every loss as ctx["labels"]
            if arg.get("from_student", True):
                student.append(_tap(s_rec, str(arg.get("recorder")), arg, at))
                c = arg.get("connector")
                conns.append(_connector(connectors[c], f"distiller.connectors.{c}") if c in connectors else None)
            else:
                teacher.append(_tap(t_rec, str(arg.get("recorder")), arg, at))
                c = arg.get("connector")
                if c and (connectors.get(c) or {}).get("type") != "OFDTeacherConnector":  # kdforge's ofd does it
                    warn(f"{at}: teacher-side connector {c!r} dropped; kdforge connectors adapt the student side")
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        loss, factor = make_loss(str(cfg.get("type")), kwargs, where)
        job: dict[str, Any] = {"name": unique(str(key), taken), "teachers": ["teacher"], "student": student,
                               "teacher": teacher, "loss": loss, "weight": factor}
        if any(c is not None for c in conns):
            job["connector"] = conns[0] if len(conns) == 1 else conns
        jobs.append(job)
    return jobs


def _from_components(entries: Any, key: str, methods_key: str) -> list[dict[str, Any]]:
    """Jobs from 0.x ``components`` (``losses``) or GML ``distill_cfg`` (``methods``) entries."""
    if not isinstance(entries, (list, tuple)):
        raise TranslationError(f"distiller.{key} must be a list of dict(student_module=..., teacher_module=..., "
                               f"{methods_key}=[...]), got {type(entries).__name__}")
    jobs, taken = [], set()
    for i, entry in enumerate(entries):
        where = f"distiller.{key}[{i}]"
        s_mod, t_mod = entry.get("student_module"), entry.get("teacher_module")
        if s_mod is None or t_mod is None:
            warn(f"{where}: no student_module/teacher_module — the loss reads the models' outputs; translated with "
                 f"taps on the model outputs ('')")
        kind = "" if entry.get("output_hook", True) else ":input"
        s_tap, t_tap = f"{s_mod or ''}{kind if s_mod else ''}", f"{t_mod or ''}{kind if t_mod else ''}"
        methods = entry.get(methods_key) or []
        if not methods:
            raise TranslationError(f"{where} has no {methods_key}: add [dict(type=LOSS, loss_weight=...)]")
        for j, m in enumerate(methods):
            if m.get("use_this", True) is False:
                continue  # cls_KD switches methods off with use_this=False
            at = f"{where}.{methods_key}[{j}]"
            kwargs = {k: v for k, v in m.items() if k != "type"}
            loss, factor = make_loss(str(m.get("type")), kwargs, at)
            name = m.get("name") or (s_mod and f"{loss if isinstance(loss, str) else loss['type']}_{s_mod}") \
                or f"job{len(jobs)}"
            jobs.append({"name": unique(str(name), taken), "teachers": ["teacher"], "student": [s_tap],
                         "teacher": [t_tap], "loss": loss, "weight": factor})
    return jobs


def translate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A kdforge config dict from an MMRazor / GML-style config (a dict of its top-level names)."""
    d = _distiller(data)
    if d is None:
        raise TranslationError("no distiller found: expected model.distiller, algorithm.distiller or distiller")
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    algorithm = data.get("algorithm") if isinstance(data.get("algorithm"), Mapping) else {}
    if "distill_losses" in d:
        jobs = _from_losses_1x(d)
        student = _spec(_model_name(model.get("architecture"), "student"), None)
        teacher = _spec(_model_name(model.get("teacher"), "teacher"), model.get("teacher_ckpt"))
    elif "components" in d:
        jobs = _from_components(d["components"], "components", "losses")
        student = _spec(_model_name(algorithm.get("architecture"), "student"), None)
        teacher = _spec(_model_name(d.get("teacher"), "teacher"), _checkpoint(d.get("teacher")))
    else:
        jobs = _from_components(d["distill_cfg"], "distill_cfg", "methods")
        student = _spec(_model_name(data.get("student_cfg"), "student"), d.get("student_pretrain"))
        teacher = _spec(_model_name(data.get("teacher_cfg"), "teacher"), d.get("teacher_pretrained"))
    if not jobs:
        raise TranslationError("the distiller defines no active loss (all switched off with use_this=False?)")
    if "_base_" in data:
        warn("_base_ configs are not merged: only the distillation part of this file is translated")
    model_placeholder_warning(student["name"], {"teacher": teacher["name"]})
    return {"student": student, "teachers": {"teacher": teacher}, "jobs": jobs}
