"""Random transforms that can record and replay their random draws.

A :class:`ReplayableTransform` splits a random augmentation into two steps:

* :meth:`~ReplayableTransform.draw` — the random part: per-sample parameters for ``n`` images, a
  dict of tensors whose first dimension is ``n`` (e.g. crop offsets and a flip flag);
* :meth:`~ReplayableTransform.apply` — the deterministic part: the view that given parameters
  produce, for one image ``(C, H, W)`` or a batch ``(N, C, H, W)``.

``transform(x)`` draws and applies, as any torchvision-style transform. Datasets call it as usual —
one image at a time in ``__getitem__`` or a whole batch in ``__getitems__`` — and need not know
about recording or replay: both are switched on from outside, on the transform object itself::

    with transform.recording() as drawn:    # every call appends the parameters it drew
        items = dataset.__getitems__(indices)
    params = concat_params(drawn)           # one row per image, in call order

    with transform.replaying(params):       # calls take rows from ``params`` instead of drawing
        again = dataset.__getitems__(indices)   # the very same views, pixel for pixel

The teacher-output cache (:mod:`kdforge.cache`) uses this to store, with each teacher output, the
parameters of the view the teacher saw, and to show the student exactly that view later. A new
augmentation becomes cacheable by subclassing :class:`ReplayableTransform` (``draw``, ``apply``,
``spec``); :class:`Compose` chains several.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]


class ReplayError(RuntimeError):
    """A replay that does not fit the dataset's calls of its transform (too few/many parameter rows)."""


def concat_params(parts: Sequence[Mapping[str, Tensor]]) -> Params:
    """Rows of several draws, concatenated along the sample dimension."""
    if not parts:
        return {}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def take_rows(params: Mapping[str, Tensor], rows: Tensor | slice) -> Params:
    """The parameters of some samples (``rows`` indexes the first dimension)."""
    return {k: v[rows] for k, v in params.items()}


class _Feed:
    """Parameter rows handed out in order to successive transform calls."""

    def __init__(self, params: Mapping[str, Tensor]) -> None:
        self.params, self.pos = dict(params), 0
        self.n = len(next(iter(self.params.values()))) if self.params else None

    def take(self, n: int) -> Params:
        if self.n is not None and self.pos + n > self.n:
            raise ReplayError(f"the dataset asked its transform for {self.pos + n} views but {self.n} were given; "
                              f"it must call its transform exactly once per sample (or once per batch)")
        out = {k: v[self.pos:self.pos + n] for k, v in self.params.items()}
        self.pos += n
        return out


class ReplayableTransform(ABC):
    """A random transform whose random parameters can be drawn, recorded and replayed (module docstring).

    Subclasses implement :meth:`draw`, :meth:`apply` and :meth:`spec`; ``generator`` (a
    ``torch.Generator`` or None for the global RNG) is what :meth:`draw` uses in ``__call__``.
    """

    generator: torch.Generator | None = None

    @abstractmethod
    def draw(self, n: int, generator: torch.Generator | None = None) -> Params:
        """Random parameters for ``n`` images: a dict of tensors with first dimension ``n``."""

    @abstractmethod
    def apply(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """The view of a batch ``x`` ``(N, C, H, W)`` that ``params`` (rows ``N``) produce; deterministic."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """A JSON-able description (type and every setting) that identifies what :meth:`apply` does;
        a teacher cache built with one spec is refused for a run with another."""

    # ------------------------------------------------------------------ call, record, replay
    def __call__(self, x: Tensor) -> Tensor:
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        if batch.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
        feed: _Feed | None = self.__dict__.get("_feed")
        params = feed.take(len(batch)) if feed is not None else self.draw(len(batch), self.generator)
        record: list[Params] | None = self.__dict__.get("_record")
        if record is not None:
            record.append({k: v.clone() for k, v in params.items()})
        out = self.apply(batch, params)
        return out[0] if single else out

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Params]]:
        """Within the block, every call appends the parameters it drew (one dict per call)."""
        drawn: list[Params] = []
        self.__dict__["_record"] = drawn
        try:
            yield drawn
        finally:
            self.__dict__.pop("_record", None)

    @contextlib.contextmanager
    def replaying(self, params: Mapping[str, Tensor]) -> Iterator[None]:
        """Within the block, calls use the rows of ``params`` in order instead of drawing; all rows must
        be used (else :class:`ReplayError`: the dataset does not call its transform once per sample)."""
        feed = _Feed(params)
        self.__dict__["_feed"] = feed
        try:
            yield
        finally:
            self.__dict__.pop("_feed", None)
        if feed.n is not None and feed.pos != feed.n:
            raise ReplayError(f"{feed.n} views were to be replayed but the dataset called its transform for "
                              f"{feed.pos}; it must call its transform exactly once per sample (or once per batch)")

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without an active record/feed
        return {k: v for k, v in self.__dict__.items() if k not in ("_feed", "_record")}


class Compose(ReplayableTransform):
    """Several replayable transforms in sequence; parameters are prefixed ``"<i>."``."""

    def __init__(self, transforms: Sequence[ReplayableTransform], generator: torch.Generator | None = None) -> None:
        bad = [type(t).__name__ for t in transforms if not isinstance(t, ReplayableTransform)]
        if bad:
            raise TypeError(f"Compose takes ReplayableTransform instances; got {bad}")
        self.transforms, self.generator = list(transforms), generator

    def draw(self, n: int, generator: torch.Generator | None = None) -> Params:
        return {f"{i}.{k}": v for i, t in enumerate(self.transforms) for k, v in t.draw(n, generator).items()}

    def apply(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        for i, t in enumerate(self.transforms):
            x = t.apply(x, {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{i}.")})
        return x

    def spec(self) -> dict[str, Any]:
        return {"type": "Compose", "transforms": [t.spec() for t in self.transforms]}


__all__ = ["Compose", "Params", "ReplayError", "ReplayableTransform", "concat_params", "take_rows"]
