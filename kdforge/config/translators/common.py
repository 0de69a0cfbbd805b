"""Shared pieces of the translators: errors, warnings, loss-name mapping, kwargs filtering.

A translator turns another toolbox's distillation config into a kdforge config dict
(``student``, ``teachers``, ``jobs``). What has no kdforge equivalent is dropped with a
:class:`TranslationWarning` naming it; what cannot be translated at all raises
:class:`TranslationError` naming the key and the fix.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Mapping

from torch import nn

from ...registry import LOSSES


class TranslationError(ValueError):
    """A source config that cannot be translated; the message names the key and the fix."""


class TranslationWarning(UserWarning):
    """Something in the source config that kdforge drops or approximates."""


def warn(msg: str) -> None:
    """Emit a :class:`TranslationWarning` (attributed to the caller of the public API)."""
    warnings.warn(msg, TranslationWarning, stacklevel=2)


#: prefix of values a ``.py`` config computed with code the safe reader does not evaluate
EXPR_PREFIX = "<expr: "


def is_expr(value: Any) -> bool:
    """True for the placeholder string the safe Python reader leaves for a non-literal expression."""
    return isinstance(value, str) and value.startswith(EXPR_PREFIX) and value.endswith(">")


# Source loss name (case-insensitive) → kdforge loss name. Names not here pass through unchanged
# (kdforge's registry then says "did you mean" at build time) and trigger a warning.
LOSS_NAMES: dict[str, str] = {
    # kdforge's own names
    **{n: n for n in ("kd", "fitnet", "dkd", "dist", "logit_std", "at", "ab", "ofd", "cwd", "vid", "nst",
                      "ft", "mgd", "rkd", "crd", "irg", "pkt", "sp", "cc", "seg_kl")},
    # United-Perception / EOD (MIMIC_LOSS_REGISTRY and the older distiller's loss map)
    "kl": "kd", "kl_loss": "kd", "kd_loss": "kd", "ce": "kd", "ce_loss": "kd",
    "l2": "fitnet", "l2_loss": "fitnet", "mse": "fitnet", "mse_loss": "fitnet",
    # mslim (Midea)
    "vanilla_kd": "kd",
    # MMRazor (0.x components, 1.x ConfigurableDistiller) and GML-style distill_cfg
    "channelwisedivergence": "cwd", "kldivergence": "kd",
    "l2loss": "fitnet", "mseloss": "fitnet", "atloss": "at", "attentiontransfer": "at", "abloss": "ab",
    "dkdloss": "dkd", "distloss": "dist", "ofdloss": "ofd", "ftloss": "ft", "factortransferloss": "ft",
    "crdloss": "crd", "fgdloss": "fgd", "nstloss": "nst", "sploss": "sp", "pktloss": "pkt", "vidloss": "vid",
    "irgloss": "irg", "ccloss": "cc", "distancewiserkd": "rkd", "anglewiserkd": "rkd", "rkdloss": "rkd",
    # not mapped on purpose: MMRazor's/yzd-v's MGDLoss is *Masked Generative* Distillation (Yang 2022),
    # kdforge's "mgd" is *Matching Guided* Distillation (Yue 2020)
}

# Per kdforge loss: source keyword → kdforge keyword.
KWARG_NAMES: dict[str, dict[str, str]] = {
    "kd": {"tau": "T", "temperature": "T", "t": "T"},
    "dkd": {"tau": "T", "temperature": "T"},
    "cwd": {"T": "tau", "temperature": "tau"},
    "dist": {"inter_loss_weight": "beta", "intra_loss_weight": "gamma"},
    "irg": {"vert": "w_vert", "edge": "w_edge", "tran": "w_tran"},
    "vid": {"midC": "mid_channels", "num_mid_channel": "mid_channels"},
    "fgd": {"alpha_fgd": "alpha", "beta_fgd": "beta", "gamma_fgd": "gamma", "lambda_fgd": "lambda_"},
}

# Keywords dropped without a warning: kdforge infers channels lazily, names jobs itself, and detaches
# teachers always.
BENIGN = {"name", "student_channels", "teacher_channels", "in_channels", "out_channels", "inC", "outC",
          "teacher_detach", "use_this", "type", "num_input_channels", "num_target_channels"}

# Keywords that scale the loss: they multiply into the job's weight.
WEIGHT_KEYS = ("loss_weight", "weight")


def loss_name(source_type: str) -> str:
    """The kdforge loss name for a source loss type (unchanged, with a warning, when unknown)."""
    name = LOSS_NAMES.get(str(source_type).lower()) or LOSS_NAMES.get(str(source_type))
    if name is None:
        warn(f"loss type {source_type!r} has no kdforge equivalent that the translator knows; it is kept as is, "
             f"so building fails unless you register a loss of that name (@kdforge.LOSSES.register"
             f"({source_type!r})) or change the job's loss (registered: {', '.join(LOSSES.names())})")
        return str(source_type)
    return name


def accepted_kwargs(name: str) -> set[str] | None:
    """Keyword names the registered loss ``name`` accepts; ``None`` when unknown or ``**kwargs``."""
    if name not in LOSSES:
        return None
    builder = LOSSES.get(name)
    if isinstance(builder, type) and issubclass(builder, nn.Module) and builder.__init__ is nn.Module.__init__:
        return set()  # no __init__ of its own: takes no keyword arguments
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def make_loss(source_type: str, kwargs: Mapping[str, Any] | None, where: str,
              extra: Mapping[str, Any] | None = None) -> tuple[str | dict[str, Any], float]:
    """``(loss spec, weight factor)`` for a source loss ``type`` with keyword arguments ``kwargs``.

    Weight keywords (``loss_weight``, ``weight``) are returned as the factor; known keywords are
    renamed; keywords the registered kdforge loss does not accept are dropped with a warning.
    ``extra`` are kdforge keywords to set (e.g. ``T=1`` for a temperature-free source KL).
    """
    if str(source_type) == "FeatureLoss" and "alpha_fgd" in (kwargs or {}):
        source_type = "FGDLoss"  # the FGD repo registers its loss as FeatureLoss
    name = loss_name(source_type)
    factor = 1.0
    out: dict[str, Any] = dict(extra or {})
    renames = KWARG_NAMES.get(name, {})
    for k, v in (kwargs or {}).items():
        if k in WEIGHT_KEYS:
            factor *= float(v)
        elif k not in BENIGN:
            out[renames.get(k, k)] = v
    if name == "rkd" and str(source_type).lower() in ("distancewiserkd", "anglewiserkd"):
        distance = str(source_type).lower() == "distancewiserkd"
        out.update(w_d=1.0 if distance else 0.0, w_a=0.0 if distance else 1.0)
        out.pop("with_l2_norm", None)
    ok = accepted_kwargs(name)
    if ok is not None:
        dropped = sorted(k for k in out if k not in ok)
        if dropped:
            warn(f"{where}: {source_type} keyword(s) {dropped} have no counterpart in kdforge's {name!r} loss "
                 f"(it accepts {sorted(ok) or 'none'}); dropped")
        out = {k: v for k, v in out.items() if k in ok}
    return ({"type": name, **out} if out else name), factor


def unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``… so that job names stay unique."""
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name}_{i}", i + 1
    taken.add(candidate)
    return candidate


def as_list(value: Any, where: str) -> list[Any]:
    """A list from a list/tuple or a single value; ``None`` is an error naming ``where``."""
    if value is None:
        raise TranslationError(f"{where} is missing")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def model_placeholder_warning(student: str, teachers: Mapping[str, str]) -> None:
    """Warn that the model names come from the source config and may not be kdforge model names."""
    named = ", ".join([f"student={student!r}"] + [f"{k}={v!r}" for k, v in teachers.items()])
    warn(f"models are named after the source config ({named}); the source's network definitions are not "
         f"translated. Set student.name / teachers.<name>.name to kdforge model names, or pass the models to "
         f"build_distiller(cfg, student=..., teachers={{...}})")
