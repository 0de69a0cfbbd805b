"""torchdistill YAML configs → a kdforge run config.

Shape read (``configs/sample/**.yaml`` of yoshitomo-matsubara/torchdistill, v1 ``key``/``kwargs`` and
v0 ``type``/``params`` spellings)::

    datasets: {...}                  # torchvision CIFAR10/CIFAR100/ImageFolder → cifar10/cifar100/image_folder
    models:
      teacher_model: {key: resnet34, kwargs: {num_classes: 1000, weights: ...}, src_ckpt: PATH}
      student_model: {key: resnet18, kwargs: {num_classes: 1000}}
    train:
      num_epochs: 20
      train_data_loader: {kwargs: {batch_size: 32}}
      teacher: {forward_hook: {input: [], output: [layer3, layer4]}}
      student: {forward_hook: {input: [], output: [layer3, layer4]}}
      optimizer: {key: SGD, kwargs: {lr: 0.1, momentum: 0.9, weight_decay: 0.0001}}
      scheduler: {key: MultiStepLR, kwargs: {milestones: [5, 15], gamma: 0.1}}
      criterion:
        key: WeightedSumLoss
        kwargs:
          sub_terms:
            ce: {criterion: {key: CrossEntropyLoss}, criterion_wrapper: {key: SimpleLossWrapper, kwargs: {input:
                 {is_from_teacher: False, module_path: '.', io: output}, target: {uses_label: True}}}, weight: 1.0}
            at_loss: {criterion: {key: ATLoss, kwargs: {at_pairs: {pair1: {teacher: {io: output, path: layer3},
                      student: {io: output, path: layer3}, weight: 1}}, mode: code}}, weight: 1000.0}

YAML tags (``!join``, ``!import_call``, ``!import_get``, ``!getattr``, ``!import_mod``) are read without
importing or calling anything: ``!join`` of plain strings is joined, the others become placeholders.

Criteria translated: ``KDLoss`` (torchdistill's ``alpha * CE + (1 - alpha) * T² * KL``: the CE part goes to
``train.ce_weight``), ``ATLoss`` (``mode: code``), ``DISTLoss``, and the task loss ``CrossEntropyLoss`` in a
``SimpleLossWrapper``. Module paths ``'.'`` are the model output; ``io: input`` becomes a ``PATH:input``
tap. Other criteria are an error naming them.
"""
from __future__ import annotations

from typing import Any, Mapping

import yaml

from .common import TranslationError, warn

_TAGS = ("!import_call", "!import_get", "!getattr", "!import_mod", "!import_call_method")


class TorchdistillLoader(yaml.SafeLoader):
    """SafeLoader that reads torchdistill's tags without executing them."""


def _join(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    parts = loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]
    if all(isinstance(p, (str, int, float)) for p in parts):
        return "".join(str(p) for p in parts)
    return {"__tag__": "join", "args": parts}


def _placeholder(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)  # type: ignore[arg-type]
        return {"__tag__": tag.lstrip("!"), **(value if isinstance(value, dict) else {"args": value})}
    return construct


TorchdistillLoader.add_constructor("!join", _join)
for _t in _TAGS:
    TorchdistillLoader.add_constructor(_t, _placeholder(_t))


def matches(data: Mapping[str, Any]) -> bool:
    train = data.get("train")
    return isinstance(data.get("models"), Mapping) and isinstance(train, Mapping) and "criterion" in train


# ------------------------------------------------------------------------------------------- helpers
def _kv(node: Any) -> tuple[str, dict[str, Any]]:
    """``(key, kwargs)`` of a v1 ``{key, kwargs}`` or v0 ``{type, params}`` entry."""
    if not isinstance(node, Mapping):
        return "", {}
    key = node.get("key", node.get("type", ""))
    kwargs = node.get("kwargs", node.get("params")) or {}
    return str(key), dict(kwargs) if isinstance(kwargs, Mapping) else {}


def _tap(path: Any, io: Any, hooks: dict[str, set[str]], who: str, where: str) -> str:
    path, io = str(path if path is not None else "."), str(io or "output")
    if io not in ("input", "output"):
        raise TranslationError(f"{where}: {who} io {io!r} must be 'input' or 'output'")
    if path != "." and path not in hooks.get(io, set()):
        warn(f"{where}: {who} {io} of {path!r} is not declared in train.{who}.forward_hook.{io}; torchdistill would not "
             f"record it (kdforge taps it anyway)")
    base = "" if path == "." else path
    if io == "input":
        if not base:
            raise TranslationError(f"{where}: the model's own input ('.' io: input) is not a tap; tap a module")
        return f"{base}:input"
    return base


def _hooks(section: Any) -> dict[str, set[str]]:
    fh = (section or {}).get("forward_hook") or {}
    return {io: {str(p) for p in (fh.get(io) or [])} for io in ("input", "output")}


def _model(entry: Any, role: str, imagenet: bool) -> dict[str, Any]:
    from ...registry import MODELS

    if not isinstance(entry, Mapping):
        raise TranslationError(f"models.{role}_model is missing; torchdistill configs name both models")
    key = str(entry.get("key", entry.get("name", "")))
    kwargs = dict(entry.get("kwargs", entry.get("params")) or {})
    for k in ("weights", "pretrained"):
        v = kwargs.pop(k, None)
        if v not in (None, False):
            warn(f"models.{role}_model.kwargs.{k} asks for pretrained hub weights, which kdforge does not download; "
                 f"set the weights file yourself")
    kwargs = {k: v for k, v in kwargs.items() if not (isinstance(v, Mapping) and "__tag__" in v)}
    if key in MODELS:
        name = key
    elif imagenet:
        name = f"torchvision:{key}"
    else:
        name = key
        warn(f"models.{role}_model.key {key!r} is not a kdforge zoo model; kept as is — set its name to a kdforge "
             f"model spec (zoo name, torchvision:NAME, timm:NAME or package.module:callable)")
    out: dict[str, Any] = {"name": name, "kwargs": kwargs}
    ckpt = entry.get("src_ckpt") or entry.get("ckpt")
    if isinstance(ckpt, str) and ckpt:
        out["weights"] = ckpt
        warn(f"models.{role}_model.src_ckpt {ckpt!r} is a torchdistill checkpoint (state dict under 'model'); kdforge "
             f"reads its 'model' entry with weights_only=True")
        out["weights_key"] = "model"
    return out


def _datasets(data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """A kdforge ``data:`` section from ``datasets:`` (or None), and whether it is an ImageNet-style folder."""
    text = yaml.safe_dump(data.get("datasets") or {}, default_flow_style=True)
    for name, key in (("cifar100", "CIFAR100"), ("cifar10", "CIFAR10")):
        if key in text:
            root = _find(data.get("datasets"), "root")
            return {"name": name, "root": root if isinstance(root, str) else None, "augment": True}, False
    if "ImageFolder" in text:
        root = _find(data.get("datasets"), "root")
        if isinstance(root, str) and root.rstrip("/").rsplit("/", 1)[-1] in ("train", "val"):
            root = root.rstrip("/").rsplit("/", 1)[0]
        return {"name": "image_folder", "root": root, "augment": True, "kwargs": {"size": 224}}, True
    return None, "ilsvrc" in text.lower() or "imagenet" in text.lower()


def _find(node: Any, key: str) -> Any:
    if isinstance(node, Mapping):
        if key in node and not isinstance(node[key], Mapping):
            return node[key]
        for v in node.values():
            got = _find(v, key)
            if got is not None:
                return got
    elif isinstance(node, list):
        for v in node:
            got = _find(v, key)
            if got is not None:
                return got
    return None


# ---------------------------------------------------------------------------------------- criteria
def _terms(criterion: Any) -> list[tuple[str, Any, float]]:
    """``(name, sub-term, weight)`` of a WeightedSumLoss (v1) / GeneralizedCustomLoss (v0) criterion."""
    key, kwargs = _kv(criterion)
    if key in ("WeightedSumLoss", "GeneralizedCustomLoss"):
        out = []
        org = (criterion or {}).get("org_term")  # v0: the loss on the model output
        if isinstance(org, Mapping) and org.get("criterion"):
            out.append(("org_term", org, float(org.get("factor", org.get("weight", 1.0)))))
        subs = kwargs.get("sub_terms", (criterion or {}).get("sub_terms")) or {}
        for name, term in subs.items():
            out.append((str(name), term, float(term.get("weight", term.get("factor", 1.0)))))
        return out
    return [("criterion", {"criterion": criterion}, 1.0)]


def _kd_pair(kw: Mapping[str, Any], hooks: tuple[dict[str, set[str]], dict[str, set[str]]], where: str) -> tuple[str, str]:
    s = _tap(kw.get("student_module_path", "."), kw.get("student_module_io", "output"), hooks[0], "student", where)
    t = _tap(kw.get("teacher_module_path", "."), kw.get("teacher_module_io", "output"), hooks[1], "teacher", where)
    return s, t


def _translate_term(name: str, term: Mapping[str, Any], weight: float, hooks: Any) -> tuple[list[dict[str, Any]], float]:
    """``(jobs, ce weight)`` of one criterion term."""
    key, kw = _kv(term.get("criterion"))
    where = f"train.criterion.{name}"
    if key in ("CrossEntropyLoss", "nn.CrossEntropyLoss"):
        wkey, wkw = _kv(term.get("criterion_wrapper"))
        inp = (wkw.get("input") or {}) if wkey else {}
        if wkey and (inp.get("is_from_teacher") or str(inp.get("module_path", ".")) != "."):
            raise TranslationError(f"{where}: CrossEntropyLoss on {inp} is not the student's output vs labels; kdforge's "
                                   f"task loss is the student's output (train.ce_weight)")
        return [], weight
    if key == "KDLoss":
        s, t = _kd_pair(kw, hooks, where)
        T, alpha = float(kw.get("temperature", 1.0)), kw.get("alpha")
        beta = kw.get("beta")
        if alpha in (None, 0):  # torchdistill returns the bare KL (no T²); kdforge's kd multiplies by T²
            return [{"name": name, "teachers": ["teacher"], "student": s, "teacher": t,
                     "loss": {"type": "kd", "T": T}, "weight": round(weight / T ** 2, 12)}], 0.0
        alpha = float(alpha)
        beta = 1.0 - alpha if beta is None else float(beta)
        if s != "":
            warn(f"{where}: KDLoss's hard-label CE is computed on {s!r}; kdforge's task loss uses the model output")
        return [{"name": name, "teachers": ["teacher"], "student": s, "teacher": t,
                 "loss": {"type": "kd", "T": T}, "weight": round(weight * beta, 12)}], round(weight * alpha, 12)
    if key == "ATLoss":
        if str(kw.get("mode", "code")) != "code":
            raise TranslationError(f"{where}: ATLoss mode {kw.get('mode')!r}; kdforge's at is the official code's "
                                   f"formula (mode: code) only")
        jobs = []
        for pair_name, pair in (kw.get("at_pairs") or {}).items():
            st, te = pair.get("student") or {}, pair.get("teacher") or {}
            jobs.append({"name": f"{name}_{pair_name}", "teachers": ["teacher"],
                         "student": _tap(st.get("path"), st.get("io"), hooks[0], "student", where),
                         "teacher": _tap(te.get("path"), te.get("io"), hooks[1], "teacher", where),
                         "loss": {"type": "at", "p": float(kw.get("p", 2)), "beta": 1.0},
                         "weight": weight * float(pair.get("weight", 1.0))})
        if not jobs:
            raise TranslationError(f"{where}: ATLoss has no at_pairs")
        return jobs, 0.0
    if key == "DISTLoss":
        s, t = _kd_pair(kw, hooks, where)
        loss = {"type": "dist", **{k: float(kw[k]) for k in ("beta", "gamma", "tau") if k in kw}}
        return [{"name": name, "teachers": ["teacher"], "student": s, "teacher": t, "loss": loss, "weight": weight}], 0.0
    known = {"FTLoss": "ft", "PKTLoss": "pkt", "RKDLoss": "rkd", "VIDLoss": "vid", "CRDLoss": "crd", "SPKDLoss": "sp",
             "FSPLoss": None, "MSELoss": "fitnet"}
    have = known.get(key)
    hint = (f" kdforge has it as loss {have!r}: write that job by hand (docs/methods.md)" if have
            else " kdforge has no counterpart of it")
    raise TranslationError(f"{where}: criterion {key or '(none)'!r} is not translated (translated: KDLoss, ATLoss, "
                           f"DISTLoss, CrossEntropyLoss).{hint}")


def translate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A kdforge run config dict from a torchdistill config."""
    models, train = data["models"], data["train"]
    data_cfg, imagenet = _datasets(data)
    student = _model(models.get("student_model"), "student", imagenet)
    teacher = _model(models.get("teacher_model"), "teacher", imagenet)
    hooks = (_hooks(train.get("student")), _hooks(train.get("teacher")))
    jobs: list[dict[str, Any]] = []
    ce_weight = 0.0
    for name, term, weight in _terms(train.get("criterion")):
        got, ce = _translate_term(name, term, weight, hooks)
        jobs += got
        ce_weight += ce
    for role, kw in (("student", student["kwargs"]), ("teacher", teacher["kwargs"])):
        if "num_classes" not in kw:
            warn(f"models.{role}_model.kwargs has no num_classes; set it to the dataset's number of classes")
    out: dict[str, Any] = {"name": str(_find(models.get("student_model"), "experiment")
                                               or _find(models.get("student_model"), "_experiment") or "torchdistill"),
                           "student": student, "teachers": {"teacher": teacher}, "jobs": jobs}
    if data_cfg is None:
        warn("datasets: not a torchvision CIFAR10/CIFAR100/ImageFolder dataset kdforge knows; the config has no data: "
             "section, so `kdforge train` stops and lists the datasets until you add one")
    else:
        loader = train.get("train_data_loader") or {}
        bs = (loader.get("kwargs") or {}).get("batch_size", loader.get("batch_size"))
        if bs:
            data_cfg["batch_size"] = int(bs)
        if data_cfg.get("root") is None:
            warn("data.root could not be read from datasets:; set it (training fails with 'needs data.root' until then)")
        out["data"] = data_cfg
        okey, okw = _kv(train.get("optimizer"))
        skey, skw = _kv(train.get("scheduler"))
        tr: dict[str, Any] = {"epochs": int(train.get("num_epochs", 1)), "ce_weight": ce_weight}
        from ...registry import OPTIMIZERS

        opt = okey.split(".")[-1].lower()
        if opt and opt in OPTIMIZERS:  # every torch.optim optimiser, by lower-case class name
            tr["optimizer"] = {"name": opt, **{k: v for k, v in okw.items() if not isinstance(v, Mapping)}}
        elif okey:
            warn(f"train.optimizer {okey!r} is not a torch.optim optimiser; the kdforge default is used")
        if skey.split(".")[-1] == "MultiStepLR":
            tr["schedule"] = {"name": "step", "milestones": [int(m) for m in skw.get("milestones", [])],
                              "gamma": float(skw.get("gamma", 0.1))}
        elif skey.split(".")[-1] == "CosineAnnealingLR":
            tr["schedule"] = {"name": "cosine", "min_lr": float(skw.get("eta_min", 0.0))}
        elif skey:
            warn(f"train.scheduler {skey!r} is not translated (MultiStepLR, CosineAnnealingLR); set train.schedule")
        out["train"] = tr
    if ce_weight == 0.0:
        warn("no criterion term is the task loss, so train.ce_weight is 0 (pure distillation, as in the source)")
    return out
