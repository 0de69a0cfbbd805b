"""Evaluate trained weights on a run config's evaluation set (``kdforge eval``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.run import RunConfig, load_run_config
from ..registry import TASKS
from .data import ShardSampler, build_datasets, make_loader
from .distributed import pick_device
from .loop import evaluate


def evaluate_weights(cfg: str | Path | dict[str, Any] | RunConfig, weights: str | Path | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """Metrics of ``cfg.model`` with ``weights`` (a state dict, or a kdforge checkpoint such as a run's
    ``best.pt``; default: ``model.weights`` from the config) on the config's evaluation set."""
    from ..build import build_model_from_spec
    from ..models import load_weights

    run = load_run_config(cfg, overrides)
    device = pick_device(run.device)
    spec = run.model if weights is None else run.model.model_copy(update={"weights": None})
    model = build_model_from_spec(spec)
    if weights is not None:
        load_weights(model, weights, strict=spec.strict, key=spec.weights_key)
    model.to(device)
    task = TASKS.build(run.task, **run.task_kwargs)
    _, eval_ds, collate = build_datasets(run.data, run.seed)
    bs = run.data.eval_batch_size or run.data.batch_size
    loader = make_loader(eval_ds, bs, ShardSampler(len(eval_ds), shuffle=False, pad=False),  # type: ignore[arg-type]
                         run.data.num_workers, collate or getattr(task, "collate_fn", None))
    metrics = evaluate(model, loader, task, device, run.train.amp)
    return {"model": run.model.name, "weights": str(weights or run.model.weights), "samples": len(eval_ds),  # type: ignore[arg-type]
            "main_metric": task.main_metric, "metrics": metrics}
