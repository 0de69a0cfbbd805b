"""Name → builder registries with did-you-mean errors, and argument checks against signatures.

One :class:`Registry` per kind of thing, all defined here and all filled by ``import kdforge``:
:data:`LOSSES`, :data:`CONNECTORS`, :data:`MODELS`, :data:`TASKS`, :data:`DATASETS`,
:data:`OPTIMIZERS`, :data:`SCHEDULES`. Users add their own entries with the decorator::

    from kdforge import LOSSES

    @LOSSES.register("my_l1")
    class MyL1(torch.nn.Module):
        def forward(self, student, teacher, **ctx):
            return (student - teacher).abs().mean()

Wherever a config names a registered thing it may also name ``"package.module:callable"``: the
callable is imported and used as the builder, with the same argument checks.

Configs are checked against the builders' signatures when they are validated
(:meth:`Registry.check_args`), before any data is read or model built, so that a typo reads
``kd has no argument 'temperature'; did you mean 'T'? accepted: T, reduction``.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Iterator, Mapping, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate name in a :class:`Registry` (a ``ValueError`` too, so config
    validation reports it at the field that names the thing)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class ArgumentError(TypeError, ValueError):
    """Keyword arguments that a registered builder does not accept (or required ones missing); a
    ``TypeError`` like Python's own, and a ``ValueError`` so config validation reports it at its field."""


#: names users write for a parameter that kdforge (after the papers' code) calls otherwise
_SYNONYMS = {"temperature": ("T", "tau", "temp"), "temp": ("T", "tau"), "tau": ("T",), "t": ("T",),
             "lambda": ("lam", "weight", "beta", "alpha"), "lambd": ("lam", "beta", "alpha"),
             "classes": ("num_classes",), "n_classes": ("num_classes",), "channels": ("out_channels", "in_channels")}


def suggest_argument(key: str, accepted: list[str]) -> str | None:
    """The accepted argument a user most likely meant by ``key`` (synonym, case, or spelling)."""
    for cand in _SYNONYMS.get(key, _SYNONYMS.get(key.lower(), ())):
        if cand in accepted:
            return cand
    by_case = [a for a in accepted if a.lower() == key.lower()]
    if by_case:
        return by_case[0]
    hint = closest(key, accepted, n=1)
    return hint[0] if hint else None


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    """The ``n`` names closest to ``name`` (difflib ratio), best first."""
    return difflib.get_close_matches(name, names, n=n, cutoff=0.4)


def import_callable(spec: str, what: str = "object") -> Any:
    """The object ``"package.module:attr.sub"`` names; errors say which part does not resolve."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise RegistryError(f"{what} {spec!r} must look like 'package.module:callable'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as e:
        raise RegistryError(f"cannot import module {mod_name!r} for {what} {spec!r}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:20]
            raise RegistryError(f"{mod_name!r} has no attribute {attr!r} ({what} {spec!r}); "
                                f"it has: {', '.join(public)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RegistryError(f"{what} {spec!r} names a {type(obj).__name__}, which is not callable")
    return obj


def _signature(obj: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):  # some builtins have none
        return None


def first_line(obj: Any, width: int = 110) -> str:
    """The first sentence of ``obj``'s docstring, at most ``width`` characters ('' if none)."""
    doc = (inspect.getdoc(obj) or "").strip()
    para = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    end = para.find(". ")
    text = para[: end + 1] if end >= 0 else para
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


class Registry:
    """A mapping ``name -> builder`` (a class or a function returning an object).

    ``fixed`` names the leading parameters kdforge itself passes to every builder of this kind
    (e.g. an optimiser's ``params``); they are not config keywords.
    """

    def __init__(self, kind: str, var: str | None = None, fixed: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.plural = kind + ("es" if kind.endswith("s") else "s")
        self.var = var or self.plural.upper()  # the name users import: kdforge.LOSSES
        self.fixed = fixed
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

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that re-register)."""
        self._items.pop(name, None)

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``, or the callable a ``"package.module:callable"`` names;
        an unknown name lists the registered ones."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        try:
            return self._items[name]
        except KeyError:
            if ":" in name:
                return import_callable(name, self.kind)
            hint = closest(name, list(self._items))
            did = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{did} Registered {self.plural}: {', '.join(sorted(self._items))}. "
                f"Register your own with @kdforge.{self.var}.register('name') or name one as "
                f"'package.module:callable'."
            ) from None

    # ------------------------------------------------------------------ arguments
    def parameters(self, name: str) -> tuple[dict[str, Any], bool]:
        """``({keyword: default or inspect.Parameter.empty}, accepts_any)`` of ``name``'s builder,
        without the ``fixed`` leading parameters; ``accepts_any`` when it takes ``**kwargs``."""
        sig = _signature(self.get(name))
        if sig is None:
            return {}, True
        params: dict[str, Any] = {}
        any_kw = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                any_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in self.fixed:
                params[p.name] = p.default
        return params, any_kw

    def defaults(self, name: str) -> dict[str, Any]:
        """The keyword arguments of ``name`` that have defaults, with them."""
        return {k: v for k, v in self.parameters(name)[0].items() if v is not inspect.Parameter.empty}

    def check_args(self, name: str, kwargs: Mapping[str, Any]) -> None:
        """Raise :class:`ArgumentError` if ``name``'s builder does not take ``kwargs`` (unknown keyword
        with did-you-mean and the accepted ones, or a required one missing)."""
        params, any_kw = self.parameters(name)
        accepted = list(params)
        shown = ", ".join(accepted) if accepted else "none"
        if not any_kw:
            for key in kwargs:
                if key not in params:
                    hint = suggest_argument(str(key), accepted)
                    did = f"; did you mean {hint!r}?" if hint else ";"
                    raise ArgumentError(f"{self.kind} {name} has no argument {key!r}{did} accepted: {shown}")
        missing = [k for k, v in params.items() if v is inspect.Parameter.empty and k not in kwargs]
        if missing:
            raise ArgumentError(f"{self.kind} {name} needs argument{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(map(repr, missing))}; accepted: {shown}")

    def build(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """``get(name)(*args, **kwargs)``, with a clear error when the keyword arguments do not fit."""
        builder = self.get(name)
        self.check_args(name, kwargs)
        return builder(*args, **kwargs)

    def from_spec(self, spec: Any, default: str | None = None) -> Any:
        """Build from a config spec: a name, ``{"type": name, **kwargs}`` (or ``{"type": name,
        "kwargs": {...}}``), ``None`` (the ``default`` name), or an already-built object."""
        name, kwargs = self.split_spec(spec, default)
        if name is None:
            return spec
        return self.build(name, **kwargs)

    def split_spec(self, spec: Any, default: str | None = None) -> tuple[str | None, dict[str, Any]]:
        """``(name, kwargs)`` of a spec (``(None, {})`` for an already-built object)."""
        if spec is None and default is not None:
            return default, {}
        if isinstance(spec, str):
            return spec, {}
        if isinstance(spec, Mapping):
            if "type" not in spec:
                raise ArgumentError(f"a {self.kind} dict needs a 'type' key naming the {self.kind} "
                                    f"(registered: {', '.join(self.names())})")
            kwargs = {k: v for k, v in spec.items() if k not in ("type", "kwargs")}
            kwargs.update(spec.get("kwargs") or {})
            return spec["type"], kwargs
        return None, {}

    def check_spec(self, spec: Any, default: str | None = None) -> None:
        """Validate a spec's name and keyword arguments without building it."""
        name, kwargs = self.split_spec(spec, default)
        if name is not None:
            self.check_args(name, kwargs)

    # ------------------------------------------------------------------ listing
    def describe(self, name: str) -> str:
        """One line about ``name``: its docstring's first line."""
        return first_line(self.get(name))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> dict[str, Callable[..., Any]]:
        """A copy of the name → builder mapping."""
        return dict(self._items)

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
#: builders ``(cfg: DataConfig, seed: int, **data.kwargs) -> (train_dataset, eval_dataset)``
DATASETS = Registry("dataset", fixed=("cfg", "seed"))
#: ``torch.optim`` optimisers (lower-case class names) and your own: ``(params, **kwargs)``
OPTIMIZERS = Registry("optimizer", fixed=("params",))
#: per-step learning-rate factors ``(total_steps, steps_per_epoch, base_lr, **kwargs) -> f(step)``
SCHEDULES = Registry("schedule", fixed=("total_steps", "steps_per_epoch", "base_lr"))

ALL: dict[str, Registry] = {r.plural: r for r in (LOSSES, CONNECTORS, MODELS, TASKS, DATASETS, OPTIMIZERS,
                                                   SCHEDULES)}
