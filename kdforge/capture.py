"""Taps: record tensors inside any ``nn.Module`` without editing it.

A tap spec is a string:

``"layer3"`` / ``"layer3:output"``
    the output of module ``layer3`` (dotted paths with integer indices: ``"layer3.1.bn2"``,
    ``"model.77"``; ``""`` or ``":output"`` is the model's own output).
``"fc:input"``
    the first positional input of ``fc``.
``"backbone.forward_features:return"``
    the return value of a method (the method is wrapped on the instance while tapped).
``"@name"``
    a tensor the model hands over itself with :func:`emit` (for values that are not module outputs).

Selectors pick a tensor out of a structured value (a tuple, a list, a dict or a Hugging Face
``ModelOutput``). They follow the kind, with Python's own indexing syntax::

    "transformer.h.3:output[0]"              element 0 of the tuple a block returns
    ":output.logits"                         field ``logits`` of the model's ModelOutput
    "encoder:output['hidden_states'][4]"     key, then element (``.hidden_states[4]`` is the same)
    "attn:return[1]", "@feats[-1]"           selectors work after every kind

``[i]`` indexes a tuple/list (negative indices count from the end), ``['key']`` / ``["key"]`` a
mapping, ``.name`` a field or attribute (on a mapping: its key). A ``ModelOutput`` is read as the
mapping it is (``.logits`` or ``['logits']``): its fields that are ``None`` are not there. A tap whose
value is not a tensor raises :class:`TapError` listing the selectors that would give one, with their
shapes.

In-place safety. A hook sees a tensor that later code may overwrite in place — the classic case is
a BN output followed by ``nn.ReLU(inplace=True)``, where a naive tap would record post-ReLU values.
Each tap therefore clones its tensor on the first call and checks the original's version counter
when the value is read: taps whose tensor was modified in place keep cloning, the others switch to
zero-copy. A zero-copy tap that is found modified later raises :class:`TapError` rather than hand a
loss wrong values. (Tensors created under ``torch.inference_mode`` have no version counter and are
cloned only on the first call; the Distiller runs teachers under ``no_grad`` for this reason.)
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .registry import closest

class TapError(ValueError):
    """A tap spec that does not resolve, or a tapped value that cannot be used."""


Selector = tuple[int | str, ...]  # ints index sequences, strings are keys / attribute names

_KINDS = ("output", "input", "return")
_SELECTOR = re.compile(r"""\[\s*(-?\d+)\s*\]|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]|\.([A-Za-z_]\w*)""")


def parse_selector(text: str, spec: str = "") -> Selector:
    """``"[0]['hidden_states'].logits"`` → ``(0, "hidden_states", "logits")``; a malformed one raises."""
    out: list[int | str] = []
    pos = 0
    while pos < len(text):
        m = _SELECTOR.match(text, pos)
        if m is None:
            raise TapError(f"tap {spec or text!r}: cannot read the selector {text[pos:]!r}; write [0] (element), "
                           f"['key'] (mapping key) or .name (field), e.g. 'transformer.h.3:output[0]', "
                           f"':output.logits', \"encoder:output['hidden_states'][4]\"")
        idx, k1, k2, attr = m.groups()
        out.append(int(idx) if idx is not None else next(v for v in (k1, k2, attr) if v is not None))
        pos = m.end()
    return tuple(out)


def format_selector(select: Selector) -> str:
    """The inverse of :func:`parse_selector`: ``(0, "logits")`` → ``"[0].logits"``."""
    return "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if s.isidentifier() else f"[{s!r}]") for s in select)


@dataclass(frozen=True)
class TapSpec:
    """A parsed tap: module (or method) path, what to record there, and the selector applied to it."""

    spec: str
    path: str
    kind: str
    select: Selector = ()

    @classmethod
    def parse(cls, spec: str) -> "TapSpec":
        if not isinstance(spec, str):
            raise TapError(f"a tap spec must be a string like 'layer3' or 'fc:input', got {spec!r}")
        if spec.startswith("@"):
            m = re.match(r"@([^\[.]*)(.*)$", spec, re.S)
            name, rest = (m.group(1), m.group(2)) if m else ("", "")
            if not name:
                raise TapError("'@' needs a name: '@name' taps kdforge.capture.emit('name', tensor)")
            return cls(spec, name, "emit", parse_selector(rest, spec))
        path, colon, after = spec.partition(":")
        if "[" in path or "'" in path or '"' in path:
            head = path.split("[", 1)[0]
            raise TapError(f"tap {spec!r}: a selector follows the kind, e.g. {head + ':output' + path[len(head):]!r}; "
                           f"module paths use dots and integer indices only ('layer3.1.bn2')")
        m = re.match(r"(\w*)(.*)$", after, re.S)
        kind, rest = (m.group(1), m.group(2)) if m else ("", after)
        if colon and not kind and not rest.startswith((".", "[")) and rest:
            raise TapError(f"tap {spec!r}: unknown kind {after!r}; use one of :output, :input, :return or '@name'")
        kind = kind or "output"
        if kind not in _KINDS:
            raise TapError(f"tap {spec!r}: unknown kind {kind!r}; use one of :output, :input, :return or '@name'")
        return cls(spec, path, kind, parse_selector(rest, spec))


def select(value: Any, selector: Selector, spec: str = "") -> Any:
    """Apply a parsed selector to a recorded value; an impossible step raises :class:`TapError`
    listing what is there."""
    for i, key in enumerate(selector):
        where = format_selector(selector[:i]) or "the value"
        if isinstance(key, int):
            if isinstance(value, Tensor) or not isinstance(value, (tuple, list)):
                raise TapError(f"tap {spec!r}: [{key}] needs a tuple or list at {where}, got "
                               f"{_describe(value)}. {_hint(value)}")
            if not -len(value) <= key < len(value):
                raise TapError(f"tap {spec!r}: index [{key}] is out of range at {where} ({len(value)} elements). "
                               f"{_hint(value)}")
            value = value[key]
        elif isinstance(value, Mapping):
            if key not in value or value[key] is None:
                raise TapError(f"tap {spec!r}: no key {key!r} at {where}. {_hint(value)}"
                               + (" (a ModelOutput holds only fields the model computed: pass e.g. "
                                  "output_hidden_states=True as a model input)" if _is_model_output(value) else ""))
            value = value[key]
        else:
            if not hasattr(value, key) or isinstance(value, Tensor):
                raise TapError(f"tap {spec!r}: {_describe(value)} at {where} has no field {key!r}. {_hint(value)}")
            value = getattr(value, key)
    return value


def _is_model_output(value: Any) -> bool:
    return any(c.__name__ == "ModelOutput" for c in type(value).__mro__)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a Tensor {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def tensor_selectors(value: Any, depth: int = 2, limit: int = 12) -> list[str]:
    """Selectors (with shapes) that lead from ``value`` to a tensor, up to ``depth`` steps."""
    found: list[str] = []

    def walk(v: Any, prefix: Selector, d: int) -> None:
        if len(found) >= limit:
            return
        if isinstance(v, Tensor):
            if prefix:
                found.append(f"{format_selector(prefix)} {tuple(v.shape)}")
            return
        if d == 0:
            return
        if isinstance(v, Mapping):
            items: Any = [(k, x) for k, x in v.items() if isinstance(k, str) and x is not None]
        elif isinstance(v, (tuple, list)):
            items = list(enumerate(v))
            if len(items) > 4:  # a long tuple (hidden states per layer): first, second, last
                items = items[:2] + [(-1, v[-1])]
        else:
            return
        for k, x in items:
            walk(x, prefix + (k,), d - 1)

    walk(value, (), depth)
    return found


def _hint(value: Any) -> str:
    opts = tensor_selectors(value)
    return f"Selectors that give a tensor here: {', '.join(opts)}." if opts else ""


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule(path)`` with an error that lists the closest module names."""
    if path in ("", "."):
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        hint = closest(path, names, n=5)
        near = f" Closest: {', '.join(map(repr, hint))}." if hint else ""
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        children = _children(model, parent)
        under = f" Children of {parent or 'the model'!r}: {', '.join(children[:12])}." if children else ""
        raise TapError(f"{type(model).__name__} has no module {path!r}.{near}{under} "
                       f"Run `kdforge inspect` or print(model) to list tappable paths.") from None


def _children(model: nn.Module, parent: str) -> list[str]:
    try:
        mod = model.get_submodule(parent) if parent else model
    except AttributeError:
        return []
    return [n for n, _ in mod.named_children()]


_ACTIVE: contextvars.ContextVar[tuple["Tapper", ...]] = contextvars.ContextVar("kdforge_taps", default=())


def emit(name: str, tensor: Tensor) -> Tensor:
    """Hand ``tensor`` to every active tapper listening for ``"@name"``; returns ``tensor`` unchanged.

    Costs one context-variable read when nothing listens, so models may call it unconditionally.
    """
    for tapper in _ACTIVE.get():
        tapper._on_emit(name, tensor)
    return tensor


class _State:
    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = False


class _Slot:
    """One tap's state: the recorded value and whether it must be cloned."""

    __slots__ = ("spec", "value", "original", "version", "clone", "probing")

    def __init__(self, spec: TapSpec) -> None:
        self.spec = spec
        self.value: Tensor | None = None
        self.original: Tensor | None = None
        self.version = 0
        self.clone = True  # first call clones and probes for in-place modification
        self.probing = True

    def put(self, x: Any) -> None:
        if self.spec.select:
            x = select(x, self.spec.select, self.spec.spec)
        if not isinstance(x, Tensor):
            opts = tensor_selectors(x)
            if opts:
                base = self.spec.spec if self.spec.kind != "output" or ":" in self.spec.spec or self.spec.spec.startswith("@") \
                    else f"{self.spec.spec}:output"
                examples = ", ".join(repr(base + o.split(" ")[0]) for o in opts[:3])
                raise TapError(f"tap {self.spec.spec!r} recorded {_describe(x)}, not a tensor; add a selector that "
                               f"picks one: {', '.join(opts)} (e.g. {examples})")
            raise TapError(f"tap {self.spec.spec!r} recorded {_describe(x)}, not a tensor; tap a "
                           f"module that returns a tensor, or emit the tensor with kdforge.capture.emit")
        self.original = x
        self.version = _version(x)
        self.value = x.clone() if self.clone else x

    def get(self) -> Tensor:
        if self.value is None:
            raise TapError(f"tap {self.spec.spec!r} recorded nothing in this forward pass: the module was "
                           f"not called (or '@' name never emitted). Check the path and the model's forward")
        modified = self.original is not None and _version(self.original) != self.version
        if self.probing:
            self.probing = False
            self.clone = modified  # keep cloning only where the model writes in place
        elif modified and not self.clone:
            self.clone = True
            raise TapError(f"tap {self.spec.spec!r}: the recorded tensor was modified in place after it was "
                           f"recorded (control flow changed?). It is cloned from now on; rerun this step")
        return self.value

    def reset(self) -> None:
        self.value = self.original = None


def _version(x: Tensor) -> int:
    try:
        return x._version
    except RuntimeError:  # inference tensors have no version counter
        return 0


class Tapper:
    """Hooks that record the tensors named by ``specs`` in ``model`` while :meth:`record` is active.

    >>> tapper = Tapper(model, ["layer3.1.bn2", "fc:input"])
    >>> with tapper.record() as rec:
    ...     out = model(x)
    >>> rec["layer3.1.bn2"].shape
    """

    def __init__(self, model: nn.Module, specs: Sequence[str]) -> None:
        self.model = model
        self.specs = [TapSpec.parse(s) for s in dict.fromkeys(specs)]
        self._slots = {s.spec: _Slot(s) for s in self.specs}
        self._emit = {s.path: self._slots[s.spec] for s in self.specs if s.kind == "emit"}
        self._handles: list[Any] = []
        self._wrapped: list[tuple[nn.Module, str]] = []
        # Hooks close over this flag holder, never over the Tapper, so a live model does not keep a
        # dropped Tapper alive: garbage collection then removes the hooks (see __del__).
        self._state = _State()
        self._recording = Recording(self)
        for s in self.specs:
            self._install(s, self._slots[s.spec])

    def _install(self, s: TapSpec, slot: _Slot) -> None:
        if s.kind == "emit":
            return
        if s.kind == "return":
            owner_path, _, method = s.path.rpartition(".")
            owner = resolve_module(self.model, owner_path)
            if isinstance(getattr(owner, method, None), nn.Module) or not method:
                self._hook_output(resolve_module(self.model, s.path), slot)
                return
            fn = getattr(owner, method, None)
            if not callable(fn):
                raise TapError(f"tap {s.spec!r}: {type(owner).__name__} at {owner_path or 'the model'!r} has no "
                               f"method {method!r}")
            self._wrap_method(owner, method, fn, slot)
            return
        module = resolve_module(self.model, s.path)
        if s.kind == "output":
            self._hook_output(module, slot)
        else:
            def pre_hook(_m: nn.Module, args: tuple[Any, ...], _slot: _Slot = slot, _st: _State = self._state) -> None:
                if _st.active:
                    if not args:
                        raise TapError(f"tap {_slot.spec.spec!r}: the module got no positional input")
                    _slot.put(args[0])
            self._handles.append(module.register_forward_pre_hook(pre_hook))

    def _hook_output(self, module: nn.Module, slot: _Slot) -> None:
        def hook(_m: nn.Module, _args: Any, out: Any, _slot: _Slot = slot, _st: _State = self._state) -> None:
            if _st.active:
                _slot.put(out)
        self._handles.append(module.register_forward_hook(hook))

    def _wrap_method(self, owner: nn.Module, name: str, fn: Any, slot: _Slot) -> None:
        state = self._state

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            if state.active:
                slot.put(out)
            return out
        owner.__dict__[name] = wrapper
        self._wrapped.append((owner, name))

    def _on_emit(self, name: str, tensor: Tensor) -> None:
        slot = self._emit.get(name)
        if slot is not None:
            slot.put(tensor)

    def record(self) -> "_Record":
        """Record during the ``with`` block; values are read from the yielded :class:`Recording`.

        (A small class, not ``@contextmanager``: this runs twice per training step.)"""
        return _Record(self)

    def close(self) -> None:
        """Remove every hook and method wrapper (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for owner, name in self._wrapped:
            owner.__dict__.pop(name, None)
        self._wrapped.clear()

    def __enter__(self) -> "Tapper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _Record:
    """The context manager of :meth:`Tapper.record`."""

    __slots__ = ("tapper", "token")

    def __init__(self, tapper: Tapper) -> None:
        self.tapper, self.token = tapper, None

    def __enter__(self) -> "Recording":
        t = self.tapper
        if t.specs:
            for slot in t._slots.values():
                slot.reset()
            if t._emit:
                self.token = _ACTIVE.set(_ACTIVE.get() + (t,))
            t._state.active = True
        return t._recording

    def __exit__(self, *exc: object) -> None:
        t = self.tapper
        if t.specs:
            t._state.active = False
            if self.token is not None:
                _ACTIVE.reset(self.token)
                self.token = None


class Recording:
    """Values recorded by a :class:`Tapper`, read by spec: ``rec["layer3"]``."""

    def __init__(self, tapper: Tapper) -> None:
        self._slots = tapper._slots

    def __getitem__(self, spec: str) -> Tensor:
        try:
            slot = self._slots[spec]
        except KeyError:
            raise TapError(f"{spec!r} is not tapped here; tapped: {list(self._slots)}") from None
        return slot.get()

    def __contains__(self, spec: object) -> bool:
        return spec in self._slots

    def values(self) -> dict[str, Tensor]:
        return {k: self[k] for k in self._slots}


__all__ = ["TapError", "TapSpec", "Tapper", "Recording", "emit", "format_selector", "parse_selector", "resolve_module",
           "select", "tensor_selectors"]
