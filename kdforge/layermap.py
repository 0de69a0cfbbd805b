"""Layer maps: which student layer learns from which teacher layer, and the jobs that say so.

>>> layer_map(4, 12)                           # uniform, TinyBERT's g(m) = m·N/M (last ↔ last)
[(0, 2), (1, 5), (2, 8), (3, 11)]
>>> layer_map(2, 6, {0: 1, 1: 5})             # explicit student i → teacher j
[(0, 1), (1, 5)]
>>> job = hidden_state_job("transformer.h.{}", "transformer.h.{}", 2, 6, loss="hidden_mse",
...                        connector="token_linear")
>>> job.student, job.teacher
(['transformer.h.0', 'transformer.h.1'], ['transformer.h.2', 'transformer.h.5'])
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

from .job import DistillJob

Strategy = Literal["uniform", "last"]


def layer_map(n_student: int, n_teacher: int,
              mapping: Strategy | Mapping[int, int] | Sequence[tuple[int, int]] = "uniform") -> list[tuple[int, int]]:
    """Pairs ``(student layer, teacher layer)`` (0-based).

    ``"uniform"``: student layer ``i`` ↔ teacher layer ``(i + 1)·N/M − 1`` (rounded down), so the last
    student layer learns from the last teacher layer and the others are spread evenly (TinyBERT's
    uniform strategy). ``"last"``: student layer ``M − k`` ↔ teacher layer ``N − k`` (the top layers).
    A mapping ``{i: j}`` or pairs ``[(i, j), …]`` are taken as they are (negative indices count from
    the end). Indices out of range raise a ``ValueError`` naming them.
    """
    if n_student < 1 or n_teacher < 1:
        raise ValueError(f"layer_map needs at least one layer on each side, got {n_student} student and "
                         f"{n_teacher} teacher layers")
    if mapping == "uniform":
        return [(i, (i + 1) * n_teacher // n_student - 1) for i in range(n_student)] if n_teacher >= n_student else \
            [(i, i * n_teacher // n_student) for i in range(n_student)]
    if mapping == "last":
        k = min(n_student, n_teacher)
        return [(n_student - k + i, n_teacher - k + i) for i in range(k)]
    if isinstance(mapping, str):
        raise ValueError(f"unknown layer-map strategy {mapping!r}; use 'uniform', 'last', a dict {{i: j}} or pairs [(i, j)]")
    pairs = list(mapping.items()) if isinstance(mapping, Mapping) else [tuple(p) for p in mapping]
    out = []
    for i, j in pairs:
        ii, jj = int(i) % n_student if -n_student <= int(i) < n_student else None, \
            int(j) % n_teacher if -n_teacher <= int(j) < n_teacher else None
        if ii is None or jj is None:
            raise ValueError(f"layer pair ({i}, {j}) is out of range: the student has {n_student} layers "
                             f"(0..{n_student - 1}), the teacher {n_teacher} (0..{n_teacher - 1})")
        out.append((ii, jj))
    return out


def layer_taps(student_template: str, teacher_template: str, pairs: Sequence[tuple[int, int]]) -> tuple[list[str], list[str]]:
    """Tap specs from templates with ``{}`` for the layer index: ``"transformer.h.{}"``,
    ``"encoder.layer.{}.attention.self.query"``, ``":output.hidden_states[{}]"``."""
    for tpl in (student_template, teacher_template):
        if "{}" not in tpl:
            raise ValueError(f"layer template {tpl!r} needs '{{}}' where the layer index goes, e.g. 'transformer.h.{{}}'")
    return [student_template.format(i) for i, _ in pairs], [teacher_template.format(j) for _, j in pairs]


def hidden_state_job(student_template: str, teacher_template: str, n_student: int, n_teacher: int,
                     mapping: Strategy | Mapping[int, int] | Sequence[tuple[int, int]] = "uniform", *,
                     loss: str | dict[str, Any] = "hidden_mse", connector: str | dict[str, Any] | None = "token_linear",
                     weight: float = 1.0, **job: Any) -> DistillJob:
    """One :class:`DistillJob` aligning mapped layers (one connector per pair; keyword arguments such as
    ``name``, ``warmup_iters``, ``teachers`` go to the job)."""
    s, t = layer_taps(student_template, teacher_template, layer_map(n_student, n_teacher, mapping))
    return DistillJob(loss=loss, student=s, teacher=t, connector=connector, weight=weight, **job)


__all__ = ["hidden_state_job", "layer_map", "layer_taps"]
