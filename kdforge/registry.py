"""Name → builder registries with did-you-mean errors.

One :class:`Registry` per kind of thing (losses, connectors, models, …). Users add their own entries
with the decorator::

    from kdforge import LOSSES

    @LOSSES.register("my_l1")
    class MyL1(torch.nn.Module):
        def forward(self, student, teacher, **ctx):
            return (student - teacher).abs().mean()
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class RegistryError(KeyError):
    """An unknown or duplicate name in a :class:`Registry`."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    """The ``n`` names closest to ``name`` (difflib ratio), best first."""
    return difflib.get_close_matches(name, names, n=n, cutoff=0.4)


class Registry:
    """A mapping ``name -> builder`` (a class or a function returning an object)."""

    def __init__(self, kind: str, var: str | None = None) -> None:
        self.kind = kind
        self.plural = kind + ("es" if kind.endswith("s") else "s")
        self.var = var or self.plural.upper()  # the name users import: kdforge.LOSSES
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None, *, override: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: ``obj.__name__``)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items and not override and self._items[key] is not obj:
                raise RegistryError(
                    f"{self.kind} {key!r} is already registered ({self._items[key]!r}); "
                    f"pass override=True to replace it"
                )
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``; an unknown name lists the registered ones."""
        try:
            return self._items[name]
        except KeyError:
            hint = closest(name, list(self._items))
            did = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{did} Registered {self.plural}: {', '.join(sorted(self._items))}. "
                f"Register your own with @kdforge.{self.var}.register('name')."
            ) from None

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """``get(name)(**kwargs)``, with a clear error when the keyword arguments do not fit."""
        builder = self.get(name)
        try:
            return builder(**kwargs)
        except TypeError as e:
            if "argument" in str(e):
                raise TypeError(f"cannot build {self.kind} {name!r} with {kwargs}: {e}") from e
            raise

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


LOSSES = Registry("loss")
CONNECTORS = Registry("connector")
MODELS = Registry("model")
TASKS = Registry("task")
