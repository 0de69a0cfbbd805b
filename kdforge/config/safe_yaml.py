"""Bounded YAML reading for configs: size limits, alias-bomb protection, YAML 1.2 numbers.

``yaml.safe_load`` never runs code, but it still lets a small file describe a huge value: aliases
(``&a``/``*a``) are shared references, and a "billion laughs" document of nine nested aliases is a
few hundred bytes that expands to 10⁹ leaves as soon as anything walks it (validation, error
formatting, ``yaml.dump``). :func:`load_yaml` therefore

* refuses documents over :data:`MAX_BYTES` before parsing;
* composes the node graph first and computes its *expanded* size (each alias counted as the full
  subtree it stands for, memoised, so the count itself is cheap), refusing more than
  :data:`MAX_NODES` nodes or recursive aliases — before any Python object is constructed;
* reads ``1e-3`` as the number it is (PyYAML follows YAML 1.1, where a float needs a dot, and
  returns the string ``"1e-3"``), so a quoted ``"4"`` is the only way to get a numeric string;
* reports non-UTF-8 text as such.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

MAX_BYTES = 4 * 1024 * 1024   # a config is a few kB; a 4 MiB one is a mistake or an attack
MAX_NODES = 200_000           # nodes after alias expansion


class YAMLLimitError(ValueError):
    """A YAML document that is too large, expands too much, or is not text."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (``1e-3``, ``1E5``, ``.5``)."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _expanded_size(node: yaml.Node, limit: int, source: str) -> int:
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        if key in active:
            raise YAMLLimitError(f"{source}: a YAML alias refers to a node that contains it (recursive alias); "
                                 f"configs cannot be self-referential")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(key)
        memo[key] = total
        if total > limit:
            raise YAMLLimitError(f"{source}: the YAML document expands to more than {limit:,} values once its "
                                 f"aliases (*name) are resolved; a config never needs that many — is it an alias "
                                 f"bomb? Write the values out or reduce the nesting of aliases")
        return total

    return size(node)


def load_yaml(text: str | bytes, source: str = "config", max_bytes: int = MAX_BYTES,
              max_nodes: int = MAX_NODES) -> Any:
    """Parse one YAML document within the limits above; :class:`YAMLLimitError` or ``yaml.YAMLError``."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise YAMLLimitError(f"{source} is {len(text):,} bytes; configs are limited to {max_bytes:,} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise YAMLLimitError(f"{source} is not UTF-8 text (byte 0x{text[e.start]:02x} at offset {e.start}); "
                                 f"save it as UTF-8") from None
    if len(text) > max_bytes:
        raise YAMLLimitError(f"{source} is {len(text):,} characters; configs are limited to {max_bytes:,}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes, source)
        return loader.construct_document(node)
    except RecursionError:
        raise YAMLLimitError(f"{source}: the YAML document is nested too deeply") from None
    finally:
        loader.dispose()
