"""Optimisers by name: every ``torch.optim`` optimiser, registered in :data:`kdforge.OPTIMIZERS`.

A config's ``train.optimizer`` names one (``sgd``, ``adamw``, ``adam``, ``rmsprop``, … — the
lower-case class name) or ``"package.module:callable"``; every other key is a keyword argument of
that optimiser, checked against its signature when the config is validated. Missing arguments take
the optimiser's *own* defaults (``torch.optim.SGD``: lr 1e-3, no momentum, no weight decay;
``AdamW``: lr 1e-3, weight decay 1e-2), so write the values your recipe needs::

    train:
      optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4, nesterov: true}
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..registry import OPTIMIZERS


def _register_torch_optimizers() -> None:
    for name, cls in vars(torch.optim).items():
        if inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
            OPTIMIZERS.register(name.lower())(cls)


_register_torch_optimizers()


def check_optimizer(name: str, kwargs: Mapping[str, Any]) -> None:
    """Validate ``name`` and ``kwargs`` (names against the signature, values by building the optimiser
    over one throw-away parameter, so torch's own range checks speak before any work starts)."""
    OPTIMIZERS.check_args(name, kwargs)
    try:
        OPTIMIZERS.get(name)([nn.Parameter(torch.zeros(1))], **kwargs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"optimizer {name}: {e}") from None


def build_optimizer(name: str, kwargs: Mapping[str, Any], params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params``; raises if there is nothing to train."""
    from .loop import TrainingError

    params = list(params)
    if not params:
        raise TrainingError("nothing to train: the model has no parameters that require grad")
    return OPTIMIZERS.build(name, params, **kwargs)


__all__ = ["build_optimizer", "check_optimizer"]
