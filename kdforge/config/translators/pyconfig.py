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


def _expr(node: ast.AST) -> str:
    return f"{EXPR_PREFIX}{ast.unparse(node)}>"


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Evaluator:
    """Evaluates the safe subset of Python expressions against names bound so far."""

    def __init__(self) -> None:
        self.env: dict[str, Any] = {}
        self.unevaluated: list[str] = []

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
        return [self(e) for e in node.elts] if not any(isinstance(e, ast.Starred) for e in node.elts) else _NO

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
        return out

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
        return out

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
            return a + b if not (a.startswith(EXPR_PREFIX) or b.startswith(EXPR_PREFIX)) else _NO
        if not (_is_num(a) and _is_num(b)):
            return _NO
        if isinstance(node.op, ast.Pow) and abs(b) > _MAX_EXPONENT:
            return _NO
        try:
            return op(a, b)
        except (ArithmeticError, ValueError):
            return _NO


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
    try:
        tree = ast.parse(p.read_text(), filename=str(p))
    except SyntaxError as e:
        raise TranslationError(f"{p}: not valid Python ({e.msg}, line {e.lineno})") from None
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
