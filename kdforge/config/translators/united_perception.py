"""United-Perception / EOD (ModelTC) ``mimic:`` blocks → kdforge jobs.

Shapes read (``up/tasks/distill/runner/kd_runner.py`` and ``mimicker.py`` of ModelTC/United-Perception):

* single job: ``mimic: {mimic_name?, mimic_type?, mimic_ins_type?, loss_weight, warm_up_iters, cfgs:
  {loss: {type, kwargs}}, teacher|teacherN: {mimic_name: [...], teacher_weight: PATH}, student:
  {mimic_name: [...]}}``;
* several jobs: ``mimic: {mimic_as_jobs: True, mimic_job0: {...}, mimic_job1: {...}}``, each job with
  its own teachers (``teacherN`` keys, unique across jobs) and losses.

``teacher_weight`` is the teacher's **checkpoint path** (the runner loads ``state['model']``), so it
becomes ``teachers.<name>.weights`` with ``weights_key: model``. The base mimicker averages its loss
over the tap pairs and sums over a job's teachers; kdforge sums pairs and averages teachers by
``teacher_weights``, so the translated weight is ``loss_weight × kwargs.loss_weight / n_pairs`` and
``teacher_weights`` are all 1.
"""
from __future__ import annotations

from typing import Any, Mapping

from .common import TranslationError, as_list, make_loss, model_placeholder_warning, unique, warn

#: the base mimicker's default loss (``Base_Mimicker.build_losses``)
_DEFAULT_LOSS = {"type": "l2_loss", "kwargs": {"feat_norm": True, "batch_mean": True}}


def matches(data: Mapping[str, Any]) -> bool:
    """A whole UP config (with ``mimic:``) or a bare mimic block."""
    if isinstance(data.get("mimic"), Mapping):
        return True
    if data.get("mimic_as_jobs") or any(str(k).startswith("mimic_job") for k in data):
        return True
    student = data.get("student")
    return isinstance(student, Mapping) and "mimic_name" in student


def _net_name(net: Any, fallback: str) -> str:
    """A model name from a UP ``net`` list: the backbone's ``type`` (e.g. ``resnet18``)."""
    if isinstance(net, list):
        parts = [m for m in net if isinstance(m, Mapping)]
        for m in parts:
            if m.get("name") == "backbone" and m.get("type"):
                return str(m["type"])
        if parts and parts[0].get("type"):
            return str(parts[0]["type"])
    return fallback


def _loss(job: Mapping[str, Any], where: str) -> tuple[Any, float]:
    """The kdforge loss spec and weight factor of one mimic job."""
    ins = job.get("mimic_ins_type", "base")
    cfgs = dict(job.get("cfgs") or {})
    if ins != "base":
        warn(f"{where}: mimic_ins_type {ins!r} is a detector-specific mimicker (it builds masks/RoIs from the "
             f"detector's outputs); it becomes loss {str(ins).lower()!r}, which kdforge must provide, and its "
             f"cfgs {sorted(cfgs) or '{}'} are dropped")
        return make_loss(str(ins).lower(), {}, where)
    if "loss" in cfgs:
        given = dict(cfgs.pop("loss") or {})
        typ = given.get("type", _DEFAULT_LOSS["type"])
        kwargs = dict(_DEFAULT_LOSS["kwargs"]) if typ == _DEFAULT_LOSS["type"] else {}
        kwargs.update(given.get("kwargs") or {})
    elif "mimic_type" in job:  # older UP: mimic_type names the loss (cls res18_kd.yaml: mimic_type: kl)
        typ, kwargs = job["mimic_type"], {}
    else:
        typ, kwargs = _DEFAULT_LOSS["type"], dict(_DEFAULT_LOSS["kwargs"])
    if cfgs:
        warn(f"{where}: cfgs keys {sorted(cfgs)} are not read by UP's base mimicker either; ignored")
    # UP's KLLoss has no temperature and CELoss defaults to T=1: keep T=1 unless the config sets one
    extra = {"T": 1.0} if str(typ).lower() in ("kl", "kl_loss", "ce", "ce_loss") else {}
    kwargs = {("T" if k == "temperature" else k): v for k, v in kwargs.items()}
    if "T" in kwargs:
        extra.pop("T", None)
    return make_loss(typ, kwargs, where, extra)


def translate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A kdforge config dict from a UP config (or its ``mimic`` block)."""
    nets: Mapping[str, Any] = data if isinstance(data.get("mimic"), Mapping) else {}
    mimic = dict(data["mimic"] if nets else data)
    if mimic.pop("task_loss", True) is False:
        warn("mimic.task_loss: False (train on the mimic loss only): kdforge's trainer adds the task loss; "
             "turn it off in the training config")
    if mimic.get("mimic_as_jobs"):
        mimic.pop("mimic_as_jobs")
        jobs_cfg = {k: v for k, v in mimic.items() if str(k).startswith("mimic_job")}
        rest = sorted(k for k in mimic if k not in jobs_cfg)
        if rest:
            warn(f"mimic: keys {rest} sit beside mimic_as_jobs; UP expects only mimic_jobN entries there; ignored")
        if not jobs_cfg:
            raise TranslationError("mimic.mimic_as_jobs is True but there is no mimic_job0, mimic_job1, … entry")
    else:
        if "student" not in mimic:
            raise TranslationError("mimic: a single mimic job needs a 'student: {mimic_name: [...]}' entry; for "
                                   "several jobs set 'mimic_as_jobs: True' and name them mimic_job0, mimic_job1, …")
        jobs_cfg = {"mimic_job0": mimic}

    teachers: dict[str, dict[str, Any]] = {}
    student: dict[str, Any] = {"name": _net_name(nets.get("net"), "net")}
    jobs: list[dict[str, Any]] = []
    taken: set[str] = set()
    for key, job in jobs_cfg.items():
        where = f"mimic.{key}" if len(jobs_cfg) > 1 or key != "mimic_job0" else "mimic"
        if not isinstance(job, Mapping):
            raise TranslationError(f"{where} must be a mapping, got {type(job).__name__}")
        s_cfg = job.get("student")
        if not isinstance(s_cfg, Mapping):
            raise TranslationError(f"{where}.student must be a mapping with 'mimic_name: [module paths]'")
        s_taps = [str(x) for x in as_list(s_cfg.get("mimic_name"), f"{where}.student.mimic_name")]
        if s_cfg.get("student_weight") and "weights" not in student:
            student.update(weights=s_cfg["student_weight"], weights_key="model")
        t_keys = [k for k in job if str(k).startswith("teacher")]
        if not t_keys:
            raise TranslationError(f"{where} names no teacher: add 'teacher0: {{mimic_name: [...], "
                                   f"teacher_weight: PATH}}'")
        groups: dict[tuple[str, ...], list[str]] = {}
        for t in t_keys:
            t_cfg = job[t] or {}
            if t in teachers:
                raise TranslationError(f"{where}.{t}: teacher {t!r} is configured in two jobs; UP requires unique "
                                       f"teacher keys (copy the teacher under a new name)")
            t_taps = [str(x) for x in as_list(t_cfg.get("mimic_name"), f"{where}.{t}.mimic_name")]
            if len(t_taps) != len(s_taps):
                raise TranslationError(f"{where}.{t}.mimic_name has {len(t_taps)} modules for {len(s_taps)} "
                                       f"student modules; give one teacher module per student module")
            teachers[t] = {"name": _net_name(nets.get(t), t)}
            if t_cfg.get("teacher_weight"):
                teachers[t].update(weights=t_cfg["teacher_weight"], weights_key="model")
            if t_cfg.get("teacher_bn_mode") == "train":
                warn(f"{where}.{t}.teacher_bn_mode: train — kdforge keeps teachers in eval mode")
            groups.setdefault(tuple(t_taps), []).append(t)
        loss, factor = _loss(job, where)
        weight = float(job.get("loss_weight", 1.0)) * factor
        if job.get("mimic_ins_type", "base") == "base":
            weight /= len(s_taps)
        warmup = max(0, int(job.get("warm_up_iters", -1) or 0))
        base_name = str(job.get("mimic_name") or key)
        for t_taps, names in groups.items():
            spec: dict[str, Any] = {
                "name": unique(base_name if len(groups) == 1 else f"{base_name}.{names[0]}", taken),
                "teachers": names, "student": list(s_taps), "teacher": list(t_taps),
                "loss": loss, "weight": weight, "warmup_iters": warmup,
            }
            if len(names) > 1:
                spec["teacher_weights"] = [1.0] * len(names)
            jobs.append(spec)
    model_placeholder_warning(student["name"], {k: v["name"] for k, v in teachers.items()})
    return {"student": student, "teachers": teachers, "jobs": jobs}
