"""Translate other toolboxes' distillation configs into kdforge configs.

>>> cfg = translate(yaml.safe_load(open("res18_kd.yaml")))       # United-Perception, auto-detected
>>> distiller = build_distiller(cfg, student=my_student, teachers={"teacher": my_teacher})
>>> print(convert_file("cwd_psp_r101_r18.py"))                    # what ``kdforge convert FILE`` prints

Recognised sources (``source=``):

``united_perception``  ModelTC United-Perception / EOD ``mimic:`` blocks (single job or ``mimic_as_jobs``)
``mslim``              Midea mslim distiller dicts (``student_distill_layer``, ``teacher_distill_layer``, ``loss``, ``weights``)
``mmrazor``            MMRazor 1.x ``distill_losses``/``loss_forward_mappings``, 0.x ``components``, GML-style ``distill_cfg``
``torchdistill``       torchdistill YAML: ``models``, ``train.criterion`` (criterion wrappers) and ``forward_hook`` declarations
``mdistiller``         mdistiller yacs YAML (``DISTILLER.TYPE``, per-method loss weights, ``SOLVER``)

The last two name their dataset, so they translate to a whole run config (``data:``, ``train:``,
``num_classes``); where the dataset has no kdforge counterpart the translation says so and leaves a
field that fails at build time instead of training on other data.

What has no kdforge equivalent is dropped with a :class:`TranslationWarning` that names it; a shape
that cannot be translated raises :class:`TranslationError`. The result always validates as a
:class:`~kdforge.config.DistillConfig`. Python configs are parsed with :mod:`ast`, never executed.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .loading import ConfigError, load
from .schema import DistillConfig
from .translators import TRANSLATORS, TranslationError, TranslationWarning
from .translators.common import is_expr
from .translators.pyconfig import read_pyconfig

SOURCES: tuple[str, ...] = tuple(TRANSLATORS)

_ALIASES = {"up": "united_perception", "eod": "united_perception", "united-perception": "united_perception",
            "unitedperception": "united_perception", "gml": "mmrazor", "mmseg-distiller": "mmrazor",
            "midea": "mslim", "megvii": "mdistiller"}

_SHAPES = ("united_perception: a 'mimic:' block (student/teacher 'mimic_name' lists, or 'mimic_as_jobs: True' with "
           "mimic_job0, mimic_job1, ...)",
           "mslim: a dict with 'student_distill_layer', 'teacher_distill_layer', 'loss' and 'weights' lists",
           "mmrazor: 'model.distiller' with 'distill_losses' + 'loss_forward_mappings' (1.x), "
           "'algorithm.distiller.components' (0.x), or 'distiller.distill_cfg' (GML-style)",
           "torchdistill: 'models' (teacher_model, student_model) and 'train' with a 'criterion'",
           "mdistiller: 'DISTILLER' with 'TYPE', 'TEACHER', 'STUDENT' (and 'SOLVER')")

__all__ = ["SOURCES", "TranslationError", "TranslationWarning", "convert_file", "detect_source", "to_yaml",
           "translate"]


def detect_source(data: Mapping[str, Any]) -> str:
    """The name of the toolbox whose config ``data`` is; an unknown shape lists the recognised ones."""
    if not isinstance(data, Mapping):
        raise TranslationError(f"a config to translate must be a mapping, got {type(data).__name__}")
    for name, module in TRANSLATORS.items():
        if module.matches(data):
            return name
    keys = ", ".join(map(str, list(data)[:12])) or "none"
    raise TranslationError("cannot tell which toolbox this config is from (top-level keys: " + keys + "). "
                           "Recognised shapes:\n  " + "\n  ".join(_SHAPES) + "\nPass source= to force one.")


def _source_name(source: str) -> str:
    key = _ALIASES.get(source.lower(), source.lower())
    if key not in TRANSLATORS:
        raise TranslationError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return key


def translate(data: Mapping[str, Any], source: str | None = None) -> dict[str, Any]:
    """A kdforge config dict (``student``, ``teachers``, ``jobs``) from another toolbox's config.

    ``source`` is one of :data:`SOURCES` (aliases: ``up``/``eod``, ``gml``); ``None`` detects it from the
    keys. The result validates as :class:`DistillConfig` (checked here) and feeds ``build_distiller``.
    """
    name = _source_name(source) if source is not None else detect_source(data)
    module = TRANSLATORS[name]
    if source is not None and not module.matches(data):
        raise TranslationError(f"this config does not have the {name} shape; expected {_SHAPES[SOURCES.index(name)]}")
    cfg = module.translate(data)
    try:
        load(DistillConfig, {k: v for k, v in cfg.items() if k in ("student", "teachers", "jobs")},
             context={"check_names": False})  # structure only: models/losses may be the user's
        if "data" in cfg:  # a whole run config (the source named its dataset and training schedule)
            from .run import RunConfig
            load(RunConfig, cfg, context={"check_names": False})
    except ConfigError as e:  # a translator bug or a source value of the wrong type
        raise TranslationError(f"the {name} config translated to an invalid kdforge config: {e}") from None
    return cfg


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of scalars (tap lists read as one line)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(x, (str, int, float, bool)) or x is None for x in data) and len(data) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def to_yaml(cfg: Mapping[str, Any], header: str | None = None) -> str:
    """``cfg`` as YAML (keys in kdforge's order), with ``header`` lines as ``#`` comments on top."""
    body = yaml.dump(dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    if not header:
        return body
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join(lines) + "\n" + body


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, Mapping):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _strings(v)


def _read_source(p: Path, source: str | None) -> Mapping[str, Any]:
    """The config mapping of a YAML/JSON or Python file (Python: top-level names, else a nested dict)."""
    if p.suffix != ".py":
        from .translators.torchdistill import TorchdistillLoader  # safe: torchdistill's tags become placeholders

        try:
            data = yaml.load(p.read_text(), Loader=TorchdistillLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            raise TranslationError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise TranslationError(f"{p}: a config must be a mapping at top level, got {type(data).__name__}")
        return data
    module, nested, _ = read_pyconfig(p)
    candidates = [module] + nested
    want = TRANSLATORS[_source_name(source)] if source is not None else None
    for data in candidates:
        if want.matches(data) if want is not None else any(m.matches(data) for m in TRANSLATORS.values()):
            return data
    return module  # let translate() raise the "recognised shapes" error


def convert_file(path: str | Path, source: str | None = None) -> str:
    """Translate the config file at ``path`` (``.yaml``/``.yml``/``.json`` or ``.py``) to kdforge YAML.

    This is what ``kdforge convert FILE [--source NAME]`` prints. Warnings are both emitted (as
    :class:`TranslationWarning`) and written as ``# warning:`` comments at the top of the YAML.
    Raises :class:`TranslationError` for a missing/unreadable file or an untranslatable config.
    """
    p = Path(path)
    if not p.is_file():
        raise TranslationError(f"config file {str(p)!r} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TranslationWarning)
        data = _read_source(p, source)
        name = _source_name(source) if source is not None else detect_source(data)
        cfg = translate(data, name)
        exprs = sorted({s for s in _strings(cfg) if is_expr(s)})
        if exprs:
            warnings.warn(f"values computed by code in {p.name} were not evaluated and are kept as text: "
                          f"{', '.join(exprs)}; replace them with literal values", TranslationWarning, stacklevel=2)
    notes = [str(w.message) for w in caught if issubclass(w.category, TranslationWarning)]
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    header = [f"kdforge config translated from {p.name} ({name}) by `kdforge convert`."]
    header += [f"warning: {n}" for n in notes]
    return to_yaml(cfg, "\n".join(header))
