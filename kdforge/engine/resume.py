"""What a resumed run may change, and applying those changes to the restored optimiser and schedule.

A checkpoint stores the config of the run that wrote it. On ``--resume`` the new config is compared
with it field by field (dotted paths):

* fields in :data:`MAY_CHANGE` (and everything below them) may differ. The new values are applied
  and each change is reported: a longer ``train.epochs`` extends the schedule — the learning rate
  from the resume point on is the new config's schedule, as if the run had been planned with the
  new length from the start (cosine/one-cycle stretch over the new total; the lr jumps from the old
  schedule's value to the new one's at that step). A new ``train.optimizer.lr`` sets the base lr of the schedule
  from the next step on; other optimiser arguments (momentum, weight decay, betas, …) likewise.
* every other field must match: the model, teachers, jobs (taps, losses and their arguments such
  as ``T``, weights), the task, the data (except where it lives and how it is loaded), the seed,
  the optimiser type (``train.optimizer.name``) and the loss weighting. A difference is a :class:`CheckpointError` naming
  each differing field with both values.
"""
from __future__ import annotations

import reprlib
from typing import Any, Mapping

import torch

#: config paths a resumed run may change (prefixes: ``train.schedule`` covers all its fields)
MAY_CHANGE: tuple[str, ...] = (
    "name", "output_dir", "device",
    "train.epochs", "train.optimizer", "train.schedule", "train.grad_clip",
    "train.log_every", "train.eval_every", "train.divergence_factor",
    "checkpoint", "data.root", "data.num_workers", "data.eval_batch_size",
)

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 6, 6, 3


def short_repr(value: Any) -> str:
    """A bounded ``repr`` (never a huge value in a message)."""
    return _short.repr(value)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "l": [{"x": 2}]}`` → ``{"a.b": 1, "l.0.x": 2}`` (leaves: scalars, empty containers)."""
    if isinstance(d, Mapping) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, (list, tuple)) and d:
        out = {}
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: list(d) if isinstance(d, tuple) else d}


_ABSENT = object()


def _shown_value(v: Any) -> str:
    return "(not set)" if v is _ABSENT else short_repr(v)


#: exceptions inside MAY_CHANGE: the optimiser's type (its saved state belongs to that type)
MUST_MATCH: tuple[str, ...] = ("train.optimizer.name",)


def _may_change(path: str) -> bool:
    if any(path == p or path.startswith(p + ".") for p in MUST_MATCH):
        return False
    return any(path == p or path.startswith(p + ".") for p in MAY_CHANGE)


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(forbidden, allowed)`` differences as ``"path: old → new"`` lines (both configs normalised by
    the same schema first, so fields a later kdforge added compare equal at their defaults)."""
    a, b = flatten(old), flatten(new)
    forbidden, allowed = [], []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, _ABSENT), b.get(path, _ABSENT)
        if va == vb:
            continue
        line = f"{path}: {_shown_value(va)} → {_shown_value(vb)}"
        (allowed if _may_change(path) else forbidden).append(line)
    return forbidden, allowed


def _shown(lines: list[str], n: int = 12) -> str:
    more = f"\n  … ({len(lines) - n} more)" if len(lines) > n else ""
    return "\n".join(f"  {ln}" for ln in lines[:n]) + more


def check_resume_config(old: Mapping[str, Any] | None, new: Mapping[str, Any], path: str) -> list[str]:
    """Raise :class:`CheckpointError` for fields that must match; return the allowed changes."""
    from .checkpoint import CheckpointError

    if not old:
        return []
    try:  # the old run's config through today's schema: defaults for fields it did not have
        from ..config.run import load_run_config
        old = load_run_config(dict(old)).to_dict()
    except Exception:  # an old format the schema no longer takes: compare as written
        pass
    old, new = dict(old), dict(new)
    if any(isinstance(j, str) for j in old.get("jobs", [])) or any(isinstance(j, str) for j in new.get("jobs", [])):
        old.pop("jobs", None), new.pop("jobs", None)  # jobs holding live modules: not comparable as config
    forbidden, allowed = diff_configs(old, new)
    if forbidden:
        raise CheckpointError(
            f"cannot resume from {path}: this config differs from the one that wrote the checkpoint in fields "
            f"that must stay the same within a run:\n{_shown(forbidden)}\nResume with the original values, or "
            f"start a new run in another directory (--out DIR), or replace this one with --overwrite. "
            f"A resume may change only: {', '.join(MAY_CHANGE)}.")
    return allowed


def apply_new_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: Any, fresh_lambdas: list[dict[str, Any]],
                              fresh_base_lrs: list[float], fresh_groups: list[dict[str, Any]]) -> None:
    """After ``load_state_dict`` of optimiser and scheduler: put back the new config's schedule and
    hyper-parameters (``load_state_dict`` restores the old ones, including the old schedule length).

    With an unchanged config this recomputes exactly the values that were restored (bit-identical
    resume).
    """
    for fn, fresh in zip(scheduler.lr_lambdas, fresh_lambdas):
        fn.__dict__.update(fresh)
    scheduler.base_lrs = list(fresh_base_lrs)
    step = scheduler.last_epoch
    lrs = []
    for group, base, fn, fresh in zip(optimizer.param_groups, fresh_base_lrs, scheduler.lr_lambdas, fresh_groups):
        for key, value in fresh.items():  # momentum, weight decay, betas, … as the new config gives them
            group[key] = value
        group["initial_lr"] = base
        group["lr"] = base * fn(step)
        lrs.append(group["lr"])
    scheduler._last_lr = lrs


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The hyper-parameters of each param group as this run's config set them (not ``lr``/``params``)."""
    skip = {"params", "lr", "initial_lr"}
    return [{k: v for k, v in g.items() if k not in skip} for g in optimizer.param_groups]
