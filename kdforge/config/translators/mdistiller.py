"""mdistiller (megvii-research) yacs YAML configs → a kdforge run config.

Shape read (``configs/cifar100/*.yaml`` merged into the defaults of ``mdistiller/engine/cfg.py``)::

    EXPERIMENT: {NAME: "", TAG: "dkd,res32x4,res8x4", PROJECT: "cifar100_baselines"}
    DISTILLER: {TYPE: "DKD", TEACHER: "resnet32x4", STUDENT: "resnet8x4"}
    SOLVER: {BATCH_SIZE: 64, EPOCHS: 240, LR: 0.05, LR_DECAY_STAGES: [150, 180, 210], LR_DECAY_RATE: 0.1,
             WEIGHT_DECAY: 0.0005, MOMENTUM: 0.9, TYPE: "SGD"}
    DKD: {BETA: 2.0}                      # optional: overrides of the method's defaults

A config is mostly defaults, so the translator carries mdistiller's defaults for each method it
translates (``KD``, ``DKD``, ``FITNET``, ``AT``, and ``NONE`` = plain training) and says which values
it took from them. The result is a whole run config: models with ``num_classes`` of the dataset
(``DATASET.TYPE``, default ``cifar100``), ``data:``, ``train:`` (SGD, step schedule, epochs) and the
jobs. mdistiller's ``feats[i]`` indices become module paths for the CIFAR ResNets and WRNs of
kdforge's zoo; other architectures are an error that says to write the taps by hand.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from .common import TranslationError, warn

#: mdistiller's defaults (mdistiller/engine/cfg.py) for the methods translated here
DEFAULTS: dict[str, dict[str, Any]] = {
    "KD": {"TEMPERATURE": 4, "LOSS": {"CE_WEIGHT": 0.1, "KD_WEIGHT": 0.9}},
    "DKD": {"CE_WEIGHT": 1.0, "ALPHA": 1.0, "BETA": 8.0, "T": 4.0, "WARMUP": 20},
    "FITNET": {"HINT_LAYER": 2, "INPUT_SIZE": (32, 32), "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 100.0}},
    "AT": {"P": 2, "LOSS": {"CE_WEIGHT": 1.0, "FEAT_WEIGHT": 1000.0}},
}
SOLVER = {"BATCH_SIZE": 64, "EPOCHS": 240, "LR": 0.05, "LR_DECAY_STAGES": [150, 180, 210], "LR_DECAY_RATE": 0.1,
          "WEIGHT_DECAY": 0.0001, "MOMENTUM": 0.9, "TYPE": "SGD"}
#: DATASET.TYPE → (kdforge data section, num_classes, training-set size)
DATASETS: dict[str, tuple[dict[str, Any], int, int]] = {
    "cifar100": ({"name": "cifar100", "root": None, "augment": True}, 100, 50000),
    "imagenet": ({"name": "image_folder", "root": None, "augment": True, "kwargs": {"size": 224}}, 1000, 1281167),
    "tiny_imagenet": ({"name": "image_folder", "root": None, "augment": True, "kwargs": {"size": 64}}, 200, 100000),
}
#: mdistiller model name → kdforge model spec name
MODELS: dict[str, str] = {
    **{n: n for n in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                      "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
                      "vgg8", "vgg11", "vgg13", "vgg16", "vgg19")},
    "MobileNetV2": "mobilenetv2", "ShuffleV1": "shufflenetv1", "ShuffleV2": "shufflenetv2",
    "ResNet18": "torchvision:resnet18", "ResNet34": "torchvision:resnet34", "ResNet50": "torchvision:resnet50",
}
SUPPORTED = ("NONE", *DEFAULTS)
OTHERS_IN_KDFORGE = {"CRD": "crd", "RKD": "rkd", "VID": "vid", "OFD": "ofd", "NST": "nst", "PKT": "pkt", "SP": "sp"}


def matches(data: Mapping[str, Any]) -> bool:
    d = data.get("DISTILLER")
    return isinstance(d, Mapping) and "TYPE" in d


def _merge(default: Mapping[str, Any], given: Any, where: str, used: list[str]) -> dict[str, Any]:
    """``default`` updated with ``given``; the dotted names of the defaults that were used go to ``used``."""
    given = given or {}
    for k in given:
        if k not in default:
            warn(f"{where}.{k} is not a setting kdforge translates; dropped")
    out: dict[str, Any] = {}
    for k, d in default.items():
        if isinstance(d, Mapping):
            out[k] = _merge(d, given.get(k), f"{where}.{k}", used)
        elif k in given:
            out[k] = given[k]
        else:
            out[k] = d
            used.append(f"{where}.{k}")
    return out


def _feature_taps(model: str, indices: list[int], method: str) -> list[str]:
    """mdistiller's ``feats[i]`` as module paths of kdforge's zoo model ``model``."""
    if re.fullmatch(r"resnet\d+(x4)?", model):
        paths = {1: "layer1", 2: "layer2", 3: "layer3"}
    elif model.startswith("wrn_"):
        paths = {1: "block1", 2: "block2", 3: "block3"}
        if 3 in indices:
            warn(f"{method}: mdistiller's last WRN feature is relu(bn1(block3)); kdforge taps block3 (before that "
                 f"BN + ReLU) — tap 'bn1' instead for the normalised map")
    else:
        raise TranslationError(
            f"{method} compares intermediate features, and the translator maps mdistiller's feature indices only for "
            f"the CIFAR ResNets and WRNs; for {model!r} write the job's student/teacher taps by hand "
            f"(`kdforge inspect {model}` lists the module paths)")
    bad = [i for i in indices if i not in paths]
    if bad:
        raise TranslationError(f"{method}: feature index {bad} of {model!r} has no kdforge tap (known: {sorted(paths)}; "
                               f"index 0 is the stem, which kdforge taps as 'relu' only by hand)")
    return [paths[i] for i in indices]


def _model(name: Any, num_classes: int, role: str) -> dict[str, Any]:
    mapped = MODELS.get(str(name))
    if mapped is None:
        warn(f"DISTILLER.{role.upper()} {name!r} is not a model kdforge knows; it is kept as is — set "
             f"{'model' if role == 'student' else 'teachers.teacher'}.name to a kdforge model spec")
        mapped = str(name)
    return {"name": mapped, "kwargs": {"num_classes": num_classes}}


def translate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A kdforge run config dict (model, teachers, jobs, data, train) from an mdistiller config."""
    dist = data["DISTILLER"]
    method = str(dist.get("TYPE", "NONE")).upper()
    if method not in SUPPORTED:
        have = OTHERS_IN_KDFORGE.get(method)
        extra = (f" kdforge has {method} as loss {have!r}: write its job by hand (docs/methods.md)" if have
                 else " kdforge has no counterpart of it")
        raise TranslationError(f"DISTILLER.TYPE {method!r} is not translated (translated: {', '.join(SUPPORTED)}).{extra}")
    used: list[str] = []
    ds_type = str((data.get("DATASET") or {}).get("TYPE", "cifar100"))
    if ds_type not in DATASETS:
        raise TranslationError(f"DATASET.TYPE {ds_type!r} is not one mdistiller has ({', '.join(DATASETS)})")
    data_cfg, num_classes, n_train = DATASETS[ds_type]
    data_cfg = {**data_cfg}
    if data_cfg["name"] == "image_folder":
        warn(f"DATASET.TYPE {ds_type!r}: kdforge reads it as an image_folder; set data.root to the folder holding "
             f"train/<class>/ and val/<class>/ (training fails with 'needs data.root' until you do)")
    else:
        warn("data.root is empty: set it to the folder holding cifar-100-python/ (training stops with 'needs "
             "data.root' until you do)")
    solver = _merge(SOLVER, data.get("SOLVER"), "SOLVER", used)
    if str(solver["TYPE"]).upper() != "SGD":
        raise TranslationError(f"SOLVER.TYPE {solver['TYPE']!r}: only SGD is translated")
    test = (data.get("DATASET") or {}).get("TEST") or {}
    data_cfg.update(batch_size=int(solver["BATCH_SIZE"]), eval_batch_size=int(test.get("BATCH_SIZE", 64)),
                    num_workers=int((data.get("DATASET") or {}).get("NUM_WORKERS", 2)))
    student = _model(dist.get("STUDENT", "resnet32"), num_classes, "student")
    teacher = _model(dist.get("TEACHER", "ResNet50"), num_classes, "teacher")

    jobs: list[dict[str, Any]] = []
    ce_weight = 1.0
    if method != "NONE":
        m = _merge(DEFAULTS[method], data.get(method), method, used)
        if method == "KD":
            ce_weight = float(m["LOSS"]["CE_WEIGHT"])
            jobs.append({"name": "kd", "teachers": ["teacher"], "student": "", "teacher": "",
                         "loss": {"type": "kd", "T": float(m["TEMPERATURE"])}, "weight": float(m["LOSS"]["KD_WEIGHT"])})
        elif method == "DKD":
            ce_weight = float(m["CE_WEIGHT"])
            steps = int(m["WARMUP"]) * math.ceil(n_train / int(solver["BATCH_SIZE"]))
            jobs.append({"name": "dkd", "teachers": ["teacher"], "student": "", "teacher": "",
                         "loss": {"type": "dkd", "alpha": float(m["ALPHA"]), "beta": float(m["BETA"]), "T": float(m["T"])},
                         "weight": 1.0, "warmup_iters": steps})
            warn(f"DKD.WARMUP {m['WARMUP']} epochs became warmup_iters {steps} = WARMUP x ceil({n_train} training "
                 f"images / batch {solver['BATCH_SIZE']}); change it if your training set differs")
        elif method == "FITNET":
            ce_weight = float(m["LOSS"]["CE_WEIGHT"])
            hint = int(m["HINT_LAYER"])
            jobs.append({"name": "fitnet", "teachers": ["teacher"],
                         "student": _feature_taps(student["name"], [hint], method),
                         "teacher": _feature_taps(teacher["name"], [hint], method),
                         "connector": {"type": "conv3x3_bn", "relu": True},  # mdistiller's ConvReg
                         "loss": "fitnet", "weight": float(m["LOSS"]["FEAT_WEIGHT"])})
        elif method == "AT":
            ce_weight = float(m["LOSS"]["CE_WEIGHT"])
            jobs.append({"name": "at", "teachers": ["teacher"],
                         "student": _feature_taps(student["name"], [1, 2, 3], method),
                         "teacher": _feature_taps(teacher["name"], [1, 2, 3], method),
                         "loss": {"type": "at", "p": float(m["P"]), "beta": float(m["LOSS"]["FEAT_WEIGHT"])},
                         "weight": 1.0})
    if used:
        warn("taken from mdistiller's defaults (mdistiller/engine/cfg.py), not from this file: " + ", ".join(used))
    exp = data.get("EXPERIMENT") or {}
    name = str(exp.get("NAME") or str(exp.get("TAG") or "mdistiller").replace(",", "_"))
    out: dict[str, Any] = {"name": name, "student": student}
    if jobs:
        out["teachers"] = {"teacher": teacher}
        warn("teachers.teacher has no weights: mdistiller loads its pretrained teacher from download_ckpts/; set "
             "teachers.teacher.weights to that checkpoint (a state dict, loaded with weights_only=True)")
    out["jobs"] = jobs
    out["data"] = data_cfg
    out["train"] = {"epochs": int(solver["EPOCHS"]), "ce_weight": ce_weight,
                    "optimizer": {"name": "sgd", "lr": float(solver["LR"]), "momentum": float(solver["MOMENTUM"]),
                                  "weight_decay": float(solver["WEIGHT_DECAY"])},
                    "schedule": {"name": "step", "milestones": [int(x) for x in solver["LR_DECAY_STAGES"]],
                                 "gamma": float(solver["LR_DECAY_RATE"])}}
    return out
