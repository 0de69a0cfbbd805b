"""Causal language modelling: next-token cross-entropy, perplexity and bits per byte.

Batch: a dict with ``input_ids`` ``(B, L)``, optionally ``attention_mask`` and ``labels`` (Hugging
Face's unshifted convention, ``-100`` where no loss is taken; default: ``input_ids`` with padding
masked), or a plain ``(B, L)`` tensor of token ids. The model gets ``input_ids`` and
``attention_mask`` as keyword arguments and returns logits ``(B, L, V)`` (a tensor, a tuple starting
with them, or a ``ModelOutput``/dict with ``logits``). The logit at position ``i`` predicts token
``i + 1``.

Metrics over all predicted tokens of the evaluation set: ``loss`` (mean negative log-likelihood,
nats/token), ``ppl`` = exp(loss), ``bpb`` = loss / ln 2 / ``bytes_per_token`` (bits per byte; with
the byte tokenizer of :mod:`kdforge.data.text` one token is one byte). Lower is better for all three;
the best checkpoint is the one with the lowest ``bpb``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import TASKS
from .classification import logits_of

IGNORE_INDEX = -100


def shifted_nll(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """``(summed NLL, number of predicted tokens)`` of next-token prediction: logits[:, :-1] vs labels[:, 1:]."""
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(f"language modelling: logits (B, L, V) and labels (B, L) must agree, got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    pred, tgt = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1), ignore_index=ignore_index, reduction="sum")
    return nll, (tgt != ignore_index).sum()


class LMMeter:
    """Summed NLL and predicted-token count; ``compute()`` → ``loss``, ``ppl``, ``bpb``."""

    reduce = "sum"

    def __init__(self, ignore_index: int = IGNORE_INDEX, bytes_per_token: float = 1.0) -> None:
        self.ignore_index, self.bytes_per_token = ignore_index, bytes_per_token
        self._state = torch.zeros(2, dtype=torch.float64)

    def update(self, outputs: Any, targets: Tensor) -> None:
        nll, n = shifted_nll(logits_of(outputs).detach(), targets, self.ignore_index)
        self._state += torch.tensor([float(nll), float(n)], dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        nll, n = float(self._state[0]), float(self._state[1])
        if n == 0:
            return {"loss": float("nan"), "ppl": float("nan"), "bpb": float("nan")}
        loss = nll / n
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpb": loss / math.log(2) / self.bytes_per_token}

    def state(self) -> Tensor:
        return self._state.clone()

    def load_state(self, state: Tensor) -> None:
        self._state = state.detach().to("cpu", torch.float64).clone().view(2)


@TASKS.register("language_modeling")
class LanguageModeling:
    """Causal LM task (see the module docstring). ``bytes_per_token`` converts bits per token to bits
    per byte: 1.0 for the byte tokenizer; for another tokenizer give its bytes/token on the eval set."""

    main_metric = "bpb"
    higher_is_better = False
    report_metrics = ("bpb", "ppl", "loss")

    def __init__(self, ignore_index: int = IGNORE_INDEX, bytes_per_token: float = 1.0) -> None:
        if bytes_per_token <= 0:
            raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token}")
        self.ignore_index, self.bytes_per_token = ignore_index, bytes_per_token

    def batch_to(self, batch: Any, device: torch.device | str) -> tuple[dict[str, Tensor], Tensor]:
        if isinstance(batch, Tensor):
            batch = {"input_ids": batch}
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise TypeError("a language-modelling batch is a dict with 'input_ids' (and optionally 'attention_mask', "
                            f"'labels') or a (B, L) tensor of token ids; got {type(batch).__name__}")
        ids = batch["input_ids"].to(device).long()
        att = batch.get("attention_mask")
        att = torch.ones_like(ids) if att is None else att.to(device)
        labels = batch.get("labels")
        labels = ids.masked_fill(att == 0, self.ignore_index) if labels is None else labels.to(device).long()
        return {"input_ids": ids, "attention_mask": att}, labels

    def criterion(self, outputs: Any, targets: Tensor) -> Tensor:
        nll, n = shifted_nll(logits_of(outputs), targets, self.ignore_index)
        return nll / n.clamp_min(1)

    def metrics(self) -> LMMeter:
        return LMMeter(self.ignore_index, self.bytes_per_token)

    def loss_context(self, targets: Tensor, batch: Any = None) -> dict[str, Any]:
        """``labels`` (the model inputs — ``attention_mask`` among them — reach the losses too)."""
        return {"labels": targets}


__all__ = ["LanguageModeling", "LMMeter", "shifted_nll"]
