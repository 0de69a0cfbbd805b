"""Read a Python config file (OpenMMLab / mslim style) **without executing it**.

The file is parsed with :mod:`ast`; only literals, ``dict(...)`` calls with keyword arguments,
names bound earlier in the file to such values, unary minus and small arithmetic on numbers (and
``+`` on strings) are evaluated. Everything else (imports, function calls, attribute access,
comprehensions, f-strings) is never run: its value becomes the placeholder string
``"<expr: SOURCE>"`` so that the rest of the config can still be read.
"""
from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import Any, Callable

from .common import EXPR_PREFIX, TranslationError

_NUM_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_MAX_EXPONENT = 64  # 2 ** 10**9 would hang the reader
# Bounds on what a few lines can build (``s = s + s`` forty times is a terabyte; ``d = dict(a=d, b=d)``
# forty times a 2**40-node tree once anything walks it; chained ``**``/``*`` grow integers without end).
MAX_STR = 100_000          # characters in one string value
MAX_INT_BITS = 4_096       # bits of an integer result (larger: left unevaluated)
MAX_NODES = 100_000        # values inside one container, counting shared sub-containers each time
MAX_FILE_BYTES = 4 * 1024 * 1024


def _expr(node: ast.AST) -> str:
    return f"{EXPR_PREFIX}{ast.unparse(node)}>"


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Evaluator:
    """Evaluates the safe subset of Python expressions against names bound so far."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.unevaluated: list[str] = []
        self._sizes: dict[int, tuple[Any, int]] = {}  # id → (container kept alive, expanded size)

    def _size(self, v: Any) -> int:
        if isinstance(v, (list, tuple, dict)):
            known = self._sizes.get(id(v))
            return known[1] if known is not None and known[0] is v else 1
        return 1

    def _bounded(self, node: ast.AST, v: Any) -> Any:
        """Record a new container's expanded size; refuse it above :data:`MAX_NODES`."""
        items = list(v.values()) + list(v.keys()) if isinstance(v, dict) else list(v)
        total = 1 + sum(self._size(x) for x in items)
        if total > MAX_NODES:
            raise TranslationError(f"line {getattr(node, 'lineno', '?')}: this value expands to more than "
                                   f"{MAX_NODES:,} entries (containers repeated inside containers); a config "
                                   f"never needs that many, so it is not read")
        self._sizes[id(v)] = (v, total)
        return v

    def __call__(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        value = method(node) if method is not None else None
        if method is None or value is _NO:
            text = _expr(node)
            self.unevaluated.append(ast.unparse(node))
            return text
        return value

    def _Constant(self, node: ast.Constant) -> Any:
        return node.value

    def _List(self, node: ast.List) -> Any:
        if any(isinstance(e, ast.Starred) for e in node.elts):
            return _NO
        return self._bounded(node, [self(e) for e in node.elts])

    _Tuple = _List
    _Set = _List

    def _Dict(self, node: ast.Dict) -> Any:
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                other = self(v)
                if not isinstance(other, dict):
                    return _NO
                out.update(other)
            else:
                key = self(k)
                if isinstance(key, (list, dict)):
                    return _NO
                out[key] = self(v)
        return self._bounded(node, out)

    def _Call(self, node: ast.Call) -> Any:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            return _NO
        out: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:  # dict(**other)
                other = self(kw.value)
                if not isinstance(other, dict):
                    return _NO
                out.update(other)
            else:
                out[kw.arg] = self(kw.value)
        return self._bounded(node, out)

    def _Name(self, node: ast.Name) -> Any:
        return self.env.get(node.id, _NO) if node.id in self.env else _NO

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        v = self(node.operand)
        if _is_num(v) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node.op, ast.Not) and isinstance(v, bool):
            return not v
        return _NO

    def _BinOp(self, node: ast.BinOp) -> Any:
        a, b = self(node.left), self(node.right)
        op = _NUM_OPS.get(type(node.op))
        if op is None:
            return _NO
        if isinstance(a, str) and isinstance(b, str) and isinstance(node.op, ast.Add):
            if a.startswith(EXPR_PREFIX) or b.startswith(EXPR_PREFIX):
                return _NO
            if len(a) + len(b) > MAX_STR:
                raise TranslationError(f"line {node.lineno}: a string built here would be longer than {MAX_STR:,} "
                                       f"characters; a config never needs that, so it is not read")
            return a + b
        if not (_is_num(a) and _is_num(b)):
            return _NO
        if isinstance(node.op, ast.Pow) and abs(b) > _MAX_EXPONENT:
            return _NO
        if isinstance(a, int) and isinstance(b, int):  # bound integer growth before computing it
            bits = max(abs(a).bit_length(), 1)
            if isinstance(node.op, ast.Pow) and b > 0 and bits * b > MAX_INT_BITS:
                return _NO
            if isinstance(node.op, ast.Mult) and bits + max(abs(b).bit_length(), 1) > MAX_INT_BITS:
                return _NO
        try:
            value = op(a, b)
        except (ArithmeticError, ValueError):
            return _NO
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            return _NO
        return value


_NO = object()  # "not in the safe subset"


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Module-level statements, descending into if/try/with blocks but never into functions or classes."""
    out: list[ast.stmt] = []
    for st in body:
        out.append(st)
        if isinstance(st, ast.If):
            out += _statements(st.body) + _statements(st.orelse)
        elif isinstance(st, ast.Try):
            out += _statements(st.body) + _statements(st.orelse) + _statements(st.finalbody)
        elif isinstance(st, ast.With):
            out += _statements(st.body)
    return out


def read_pyconfig(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """``(module names, dict literals assigned anywhere, unevaluated expressions)`` of a Python config.

    The first are the top-level names (as ``mmengine.Config.fromfile`` would see them, ``_base_``
    not merged); the second are every ``NAME = {...}`` / ``NAME = dict(...)`` in the file, including
    inside functions (mslim builds its config dict inside ``main``), for shapes not at top level.
    """
    p = Path(path)
    if not p.is_file():
        raise TranslationError(f"config file {str(p)!r} does not exist")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise TranslationError(f"{p} is {p.stat().st_size:,} bytes; configs are limited to {MAX_FILE_BYTES:,}")
    try:
        tree = ast.parse(p.read_bytes().decode("utf-8"), filename=str(p))
    except UnicodeDecodeError as e:
        raise TranslationError(f"{p} is not UTF-8 text (offset {e.start}); save it as UTF-8") from None
    except (SyntaxError, RecursionError, MemoryError) as e:
        what = f"{e.msg}, line {e.lineno}" if isinstance(e, SyntaxError) else "nested too deeply"
        raise TranslationError(f"{p}: not valid Python ({what})") from None
    ev = _Evaluator()
    for st in _statements(tree.body):
        if isinstance(st, ast.Assign):
            value = ev(st.value)
            for target in st.targets:
                if isinstance(target, ast.Name):
                    ev.env[target.id] = value
        elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None:
            ev.env[st.target.id] = ev(st.value)
    module = dict(ev.env)
    nested: list[dict[str, Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Dict, ast.Call)):
            value = ev(node.value)
            if isinstance(value, dict):
                nested.append(value)
    return module, nested, sorted(set(ev.unevaluated))
