"""The Distiller: a student, frozen teachers and jobs → ``(student_output, distillation_loss)``.

>>> distiller = Distiller(student, {"t0": teacher}, jobs=[DistillJob(loss="kd", student="fc", teacher="fc")])
>>> opt = torch.optim.SGD(distiller.learnable_parameters(), lr=0.05)
>>> out, kd_loss = distiller(images, labels=labels)
>>> (F.cross_entropy(out, labels) + kd_loss).backward()

Model inputs and loss context. Positional arguments go to the student and every teacher. Keyword
arguments are routed by name: those the student's ``forward`` declares (``input_ids``,
``attention_mask``, ``pixel_values``, …; ``labels`` excepted, so a Hugging Face model does not compute
its own loss) go to the models as keyword arguments, and *every* keyword argument reaches the losses as
context (``labels``, ``index``, ``attention_mask``, …). A single dict batch (what Hugging Face
collators produce) is spread into keyword arguments::

    out, kd = distiller(input_ids=ids, attention_mask=mask, labels=labels)
    out, kd = distiller({"input_ids": ids, "attention_mask": mask, "labels": labels})   # the same

``Distiller(..., model_inputs=["input_ids", "attention_mask"])`` names the model inputs explicitly.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from .capture import Tapper, TapSpec, resolve_module
from .job import SELF, DistillJob, JobModule
from .placement import Placement, needs_move, placement_of, probe_tensor, to_placement
from .teacher_exec import ChannelsLast, TeacherExec, logits_only, TeacherRunner, to_contiguous, to_plain

Teachers = Mapping[str, nn.Module] | Sequence[nn.Module] | nn.Module | None

log = logging.getLogger(__name__)


class DistillerError(ValueError):
    """A Distiller set up or called in a way that cannot train correctly."""


class ExternalTeacher(nn.Module):
    """Stands in for a teacher whose tapped tensors always come through ``teacher_outputs=`` — e.g. from
    a teacher-output cache (:mod:`kdforge.cache`) — so the real model is never built nor run.

    ``taps``: the tap specs it can supply; ``source``: where they come from (for messages);
    ``num_params``: the real teacher's parameter count (for reports). Jobs whose loss needs the
    teacher *model* (class flag ``needs_teacher_model``, e.g. MGD's matching pass, OFD's margins
    from the teacher's BatchNorm) cannot use it and are refused when the Distiller is built.
    """

    def __init__(self, taps: Sequence[str], source: str, num_params: int | None = None) -> None:
        super().__init__()
        self.taps, self.source, self.num_params = list(taps), source, num_params

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise DistillerError(f"this teacher is served from {self.source} and cannot run; pass its tensors with "
                             f"teacher_outputs=")

    def extra_repr(self) -> str:
        return f"source={self.source!r}, taps={self.taps}"


def _as_dict(teachers: Teachers) -> dict[str, nn.Module]:
    if teachers is None:
        return {}
    if isinstance(teachers, nn.Module):
        return {"t0": teachers}
    if isinstance(teachers, Mapping):
        return dict(teachers)
    return {f"t{i}": t for i, t in enumerate(teachers)}


def _from_dict(cfg: Mapping[str, Any], teachers: Teachers, jobs: Sequence[Any]) -> tuple[nn.Module, Teachers, Any, Any]:
    from .compat import from_live_config, is_live_config

    if teachers is not None or jobs:
        raise DistillerError("Distiller(config_dict) takes the whole set-up in the dict; do not also pass teachers/jobs")
    if not is_live_config(cfg):
        raise DistillerError(f"Distiller's first argument is the student nn.Module (or an mslim-style dict holding "
                             f"the models under 'student_model'/'teacher_model'); got a dict with keys "
                             f"{sorted(map(str, cfg))}. For a config of model names use kdforge.build_distiller(cfg)")
    return from_live_config(cfg)


class Distiller(nn.Module):
    """Student + teachers + jobs.

    * Teachers are frozen (``requires_grad=False``), kept in eval mode whatever ``train()`` is
      called with, and run under ``torch.no_grad()`` (so no teacher activation is kept for backward).
      They are *not* submodules: ``state_dict()``/``parameters()`` hold the student, the connectors
      and the losses only; ``.to()``/``.cuda()``/``.half()`` still move the teachers.
    * ``step`` (a buffer, saved in ``state_dict``) counts training forwards; job warm-ups ramp on it.
    * Teacher outputs may be supplied precomputed: ``distiller(x, teacher_outputs={"t0": {"fc": t}})``
      skips that teacher's forward (a cache of teacher outputs builds on this).
    * ``teacher_exec`` (:class:`~kdforge.teacher_exec.TeacherExec`, a dict of its fields, or
      ``"plain"``) sets how teachers run: by default conv teachers run in channels_last memory format
      and before the student; ``torch.compile`` and autocast are opt-in.
    * Teachers may run in another dtype (a bfloat16/float16 teacher beside a float32 student) or on
      another device (a second GPU, or the CPU while the student is on the GPU): each teacher gets
      its inputs on its own device in its own dtype, and its taps reach the jobs on the student's
      device in the student's dtype (:mod:`kdforge.placement`). ``teacher_devices={"t0": "cpu"}``
      puts a teacher on a device of its own; such a teacher, and one already on another device than
      the student when the Distiller is built, *keeps its device* when the Distiller is moved
      (``.to(device)``/``.cuda()`` move the student, connectors, losses and the other teachers;
      dtype casts such as ``.double()`` still apply to it).
    """

    step: Tensor

    def __init__(self, student: nn.Module | Mapping[str, Any], teachers: Teachers = None,
                 jobs: Sequence[DistillJob | Mapping[str, Any]] = (),
                 teacher_exec: TeacherExec | Mapping[str, Any] | str | None = None,
                 model_inputs: Sequence[str] | None = None,
                 teacher_devices: Mapping[str, str | torch.device] | None = None) -> None:
        device = None
        if isinstance(student, Mapping):  # mslim's Distiller(config) with live modules (see kdforge.compat)
            student, teachers, jobs, device = _from_dict(student, teachers, jobs)
        super().__init__()
        self.teacher_exec = teacher_exec if isinstance(teacher_exec, TeacherExec) else \
            TeacherExec.model_validate(teacher_exec if teacher_exec is not None else {})
        self.student = student
        #: keyword arguments passed to the models (all keyword arguments also reach the losses)
        self.model_inputs: frozenset[str] = frozenset(model_inputs) if model_inputs is not None \
            else frozenset(_keyword_params(student)) - CONTEXT_ONLY
        self._teachers = _as_dict(teachers)
        student_params = {id(p): n for n, p in student.named_parameters()}
        for name, t in self._teachers.items():
            if t is student:
                raise DistillerError(f"teacher {name!r} is the student itself; for self-distillation name the "
                                     f"teacher {SELF!r} in the job instead of passing the student as a teacher")
            shared = [n for n, p in t.named_parameters() if id(p) in student_params]
            if shared:  # freezing this teacher would freeze the student too
                more = f", … ({len(shared) - 3} more)" if len(shared) > 3 else ""
                raise DistillerError(f"teacher {name!r} shares {len(shared)} parameter(s) with the student "
                                     f"({', '.join(shared[:3])}{more}): teachers are frozen, so the student would "
                                     f"stop training. Give the teacher its own copy (copy.deepcopy(model)), or for "
                                     f"self-distillation name the teacher {SELF!r} in the job")
            t.requires_grad_(False)
            t.eval()
        #: teachers that keep their own device when the Distiller moves (see the class docstring)
        self._own_device: set[str] = self._place_teachers(student, teacher_devices or {})
        specs = [j if isinstance(j, DistillJob) else DistillJob.model_validate(dict(j)) for j in jobs]
        self.jobs = nn.ModuleList()
        used: set[str] = set()
        for i, spec in enumerate(specs):
            if spec.teachers is None and not self._teachers:
                raise DistillerError(f"job {spec.name or i!r} (jobs[{i}]) has no teacher: no teachers were given "
                                     f"and the job names none. Pass teachers (or a config's teachers:), or write "
                                     f"teachers: [{SELF!r}] in the job for self-distillation from the student's "
                                     f"own taps")
            names = spec.teachers or list(self._teachers)
            unknown = [n for n in names if n != SELF and n not in self._teachers]
            if unknown:
                raise DistillerError(f"job {spec.name or i!r} names unknown teacher(s) {unknown}; teachers given: "
                                     f"{list(self._teachers) or 'none'} (or {SELF!r} for the student's own taps)")
            job_name = spec.name or f"job{i}"
            if any(j.name == job_name for j in self.jobs):
                raise DistillerError(f"two jobs are named {job_name!r}; give each a unique name")
            try:
                self.jobs.append(JobModule(spec, job_name, names))
            except (KeyError, TypeError) as e:
                raise type(e)(f"job {job_name!r} (jobs[{i}]): {e}") from e
            except ValueError as e:  # bad tap counts, loss arguments (LossArgumentError keeps its type)
                raise (DistillerError if type(e) is ValueError else type(e))(f"job {job_name!r} (jobs[{i}]): {e}") from e
            used.update(names)
        self._student_taps = sorted({t for j in self.jobs for t in j.spec.student}
                                    | {t for j in self.jobs if SELF in j.teacher_names for t in j.spec.teacher})
        self._teacher_taps = {n: sorted({t for j in self.jobs if n in j.teacher_names for t in j.spec.teacher})
                              for n in self._teachers if n in used}
        self._check_external()
        self._student_tapper = Tapper(student, self._student_taps)
        self._teacher_tappers = {n: Tapper(self._teachers[n], taps) for n, taps in self._teacher_taps.items()
                                 if not isinstance(self._teachers[n], ExternalTeacher)}
        self._runners = {n: TeacherRunner(n, self._teachers[n], self.teacher_exec) for n in self._teacher_tappers}
        self._student_format = ChannelsLast("student", student, self.teacher_exec.student_channels_last,
                                            keep=logits_only if self.teacher_exec.student_channels_last == "auto" else None)
        for job in self.jobs:
            setup = getattr(job.loss, "setup", None)
            if callable(setup):
                setup(student=student, teachers=[student if n == SELF else self._teachers[n] for n in job.teacher_names],
                      student_taps=list(job.spec.student), teacher_taps=list(job.spec.teacher))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._step_seen: tuple[Tensor | None, int, int] = (None, -1, 0)  # (buffer, its version, int value) last seen
        #: each job's last value as added to the total: loss × weight × warm-up factor
        self.losses: dict[str, Tensor] = {}
        #: each job's last value before weight and warm-up (the loss module's own output)
        self.raw_losses: dict[str, Tensor] = {}
        # the student's first floating parameter, to read its device and dtype per call in O(1) (a
        # parameter keeps its identity through .to() and lazy materialisation)
        self._probe = probe_tensor(student)
        if device is not None:
            self.to(device)
        for line in self.placements():
            log.info(line)

    def get_learnable_params(self) -> list[nn.Parameter]:
        """Alias of :meth:`learnable_parameters` (mslim's name)."""
        return self.learnable_parameters()

    # ----------------------------------------------------------------- teachers
    @property
    def teachers(self) -> Mapping[str, nn.Module]:
        """The frozen teachers, by name (read-only view)."""
        return dict(self._teachers)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        for t in self._teachers.values():
            t.eval()
        return self

    def _apply(self, fn: Any, recurse: bool = True) -> "Distiller":  # .to(), .cuda(), .half(), …
        super()._apply(fn, recurse)
        for n, t in self._teachers.items():
            t._apply(_dtype_part(fn) if n in self._own_device else fn)
        return self

    def _place_teachers(self, student: nn.Module, devices: Mapping[str, str | torch.device]) -> set[str]:
        """Move the teachers ``devices`` names there; return the teachers that keep their own device."""
        unknown = sorted(set(devices) - set(self._teachers))
        if unknown:
            raise DistillerError(f"teacher_devices names unknown teacher(s) {unknown}; teachers: {list(self._teachers)}")
        own = set()
        s_place = placement_of(student)
        for name, t in self._teachers.items():
            if name in devices:
                try:
                    t.to(torch.device(devices[name]))
                except (RuntimeError, AssertionError) as e:  # an unparsable name, a GPU that is not there
                    raise DistillerError(f"teacher_devices[{name!r}] = {str(devices[name])!r}: {e}") from None
                own.add(name)
            where = placement_of(t)
            if where is not None and where.device.type == "meta":
                raise DistillerError(f"teacher {name!r} is on the meta device: its weights were never materialised, "
                                     f"so it cannot run. Load its weights first (e.g. teacher.to_empty(device='cpu') "
                                     f"then load_state_dict, or build it without the meta device)")
            if where is not None and s_place is not None and where.device != s_place.device:
                own.add(name)
        return own

    def _here(self) -> Placement | None:
        """The student's placement (its probe parameter's device and dtype; re-probed after a meta student
        is materialised, which replaces its parameters)."""
        if self._probe is None or self._probe.device.type == "meta":
            self._probe = probe_tensor(self.student)
        return placement_of(self._probe)

    def placements(self) -> list[str]:
        """One line per teacher that runs in another dtype or on another device than the student."""
        s_place = self._here()
        lines = []
        for name, runner in self._runners.items():
            where = runner.placement
            if s_place is not None and needs_move(where, s_place):
                lines.append(f"teacher {name!r} runs in {where}; its inputs are moved there and its taps cast to "
                             f"the student's {s_place}")
        return lines

    # ----------------------------------------------------------------- parameters
    def learnable_parameters(self) -> list[nn.Parameter]:
        """Student + connector + loss parameters that require grad (never a teacher's)."""
        frozen = {id(p) for t in self._teachers.values() for p in t.parameters()}
        seen: set[int] = set()
        out = []
        for p in self.parameters():
            if p.requires_grad and id(p) not in frozen and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    # ----------------------------------------------------------------- forward
    def forward(self, *inputs: Any, teacher_outputs: Mapping[str, Mapping[str, Tensor]] | None = None,
                **kwargs: Any) -> tuple[Any, Tensor]:
        """Run the student (and the teachers), return ``(student_output, weighted distillation loss)``.

        ``inputs`` go to the models; keyword arguments the student's ``forward`` declares (see
        :attr:`model_inputs`) go to the models too; every keyword argument (``labels``, ``index``,
        ``epoch``, ``attention_mask``, …) is passed to every loss as context, with ``step`` and
        ``student_output`` added. A single dict argument is spread into keyword arguments. In
        training mode the step counter advances by one.
        """
        if _called_through_torch_compile():
            raise DistillerError(
                "torch.compile(distiller) is not supported: the Distiller's taps are forward hooks switched on and "
                "off around each model call, and its lazily-shaped connectors are built on the first call, neither "
                "of which a compiled graph of the whole Distiller can hold. Compile the models instead, in place — "
                "distiller.student.compile() (and teacher.compile() for a teacher) — and keep calling the Distiller "
                "itself: taps, connectors and losses work unchanged around compiled models")
        inputs, model_kw, ctx = self.split_inputs(inputs, kwargs)
        self._check_devices(inputs + tuple(model_kw.values()))
        given = teacher_outputs or {}
        if self.teacher_exec.teacher_first:
            trecs, tlogits = self._run_teachers(inputs, model_kw, given)
        with self._student_tapper.record() as srec:
            out = self._student_format.call(self.student, *inputs, **model_kw)
        if not self.teacher_exec.teacher_first:
            trecs, tlogits = self._run_teachers(inputs, model_kw, given)
        step = self._step_int()
        ctx = {**ctx, "step": step, "student_output": out}
        total: Tensor | None = None
        losses, raw_losses = {}, {}
        if self._student_format.on:  # channels_last student: losses get its taps in the default format
            srec = {t: to_contiguous(srec[t]) for t in self._student_taps}
        for job in self.jobs:
            s_feats = [srec[t] for t in job.spec.student]
            t_feats = [[srec[t].detach() if n == SELF else trecs[n][t] for t in job.spec.teacher]
                       for n in job.teacher_names]
            logits = [tlogits.get(n) for n in job.teacher_names] if job.spec.combine == "confidence" else None
            raw = job(s_feats, t_feats, ctx, logits)
            factor = job.spec.weight * job.spec.warmup_factor(step)  # the one place weight × warm-up applies
            val = raw * factor if factor != 1.0 else raw  # x * 1.0 is x: skip the op, not the math
            losses[job.name], raw_losses[job.name] = val.detach(), raw.detach()
            total = val if total is None else total + val
        # plain attributes (skips nn.Module.__setattr__ on every step)
        self.__dict__["losses"], self.__dict__["raw_losses"] = losses, raw_losses
        if self.training:
            self.step.add_(1)
            self.__dict__["_step_seen"] = (self.step, self.step._version, step + 1)
        return out, total if total is not None else torch.zeros((), device=_device_of(out))

    def _step_int(self) -> int:
        """``int(self.step)`` without reading the buffer (a device sync on GPU) when it has not been
        written since this Distiller last advanced it (its version counter tells: load_state_dict,
        DDP buffer broadcasts and user writes all bump it)."""
        buf, version, value = self._step_seen
        if buf is not self.step or version != self.step._version:
            value = int(self.step)
            self._step_seen = (self.step, self.step._version, value)
        return value

    def split_inputs(self, inputs: tuple[Any, ...], kwargs: Mapping[str, Any]
                     ) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, Any]]:
        """``(positional model inputs, keyword model inputs, loss context)`` for a call (see the module
        docstring): a lone dict batch holding a model input is spread (a dict without one stays a
        positional input, for models that take a dict); keywords in :attr:`model_inputs` go to the
        models; all keywords are context."""
        if len(inputs) == 1 and isinstance(inputs[0], Mapping) and self.model_inputs.intersection(inputs[0]):
            clash = sorted(set(inputs[0]) & set(kwargs))
            if clash:
                raise DistillerError(f"{clash} given both in the dict batch and as keyword arguments; pass each once")
            kwargs = {**inputs[0], **kwargs}
            inputs = ()
        model_kw = {k: v for k, v in kwargs.items() if k in self.model_inputs}
        if not inputs and not model_kw:
            raise DistillerError(f"no model inputs: pass them positionally (distiller(x, labels=y)), as a dict batch, or "
                                 f"as keyword arguments the student's forward takes ({sorted(self.model_inputs)}); "
                                 f"got only context {sorted(kwargs)}")
        return tuple(inputs), model_kw, dict(kwargs)

    def _run_teachers(self, inputs: tuple[Any, ...], model_kw: Mapping[str, Any],
                      given: Mapping[str, Mapping[str, Tensor]]) -> tuple[dict[str, Any], dict[str, Any]]:
        recs: dict[str, Any] = {}
        logits: dict[str, Any] = {}
        here = self._here()  # where the jobs run: the student's device and dtype
        for name in self._teacher_taps:
            if name not in given and isinstance(self._teachers[name], ExternalTeacher):
                raise DistillerError(f"teacher {name!r} is served from {self._teachers[name].source}; this call "
                                     f"has no teacher_outputs[{name!r}] (taps {self._teacher_taps[name]})")
            if name in given:
                missing = [t for t in self._teacher_taps[name] if t not in given[name]]
                if missing:
                    raise DistillerError(f"teacher_outputs[{name!r}] lacks taps {missing}; it has {list(given[name])}")
                recs[name] = _to(given[name], here) if here is not None else given[name]
                logits[name] = recs[name].get("", None)
                continue
            teacher, tapper = self._teachers[name], self._teacher_tappers[name]
            if teacher.training:  # someone called teacher.train() behind our back
                teacher.eval()
            runner = self._runners[name]
            if model_kw:
                _check_accepts(self._teachers[name], name, model_kw)
            with torch.no_grad(), tapper.record() as rec:  # the runner brings the inputs to the teacher
                logits[name] = runner(*inputs, **model_kw)
            if runner.converts:  # channels_last / autocast: losses get contiguous float32 tensors
                recs[name], logits[name] = {t: to_plain(rec[t]) for t in self._teacher_taps[name]}, to_plain(logits[name])
            else:
                recs[name] = rec
            if here is not None and needs_move(runner.placement, here):  # another dtype or device: bring it here
                recs[name] = _to({t: recs[name][t] for t in self._teacher_taps[name]}, here)
                logits[name] = to_placement(logits[name], here.device, here.dtype)
        return recs, logits

    def _check_external(self) -> None:
        """Jobs on an :class:`ExternalTeacher` may only use taps it holds and losses that need no model."""
        for job in self.jobs:
            for n in job.teacher_names:
                t = self._teachers.get(n)
                if not isinstance(t, ExternalTeacher):
                    continue
                if getattr(job.loss, "needs_teacher_model", False):
                    raise DistillerError(f"job {job.name!r}: loss {type(job.loss).__name__} needs the teacher model "
                                         f"itself, but teacher {n!r} is served from {t.source}; run this job with "
                                         f"the live teacher (drop the teacher cache)")
                missing = [tap for tap in job.spec.teacher if tap not in t.taps]
                if missing:
                    raise DistillerError(f"job {job.name!r} taps teacher {n!r} at {missing}, but {t.source} holds "
                                         f"only {t.taps}")

    # ----------------------------------------------------------------- helpers
    def on_epoch_start(self, epoch: int, loader: Any) -> None:
        """Let losses refresh data-dependent state before ``epoch`` (e.g. MGD's matching pass over
        ``loader``); a training loop calls this once per epoch."""
        for job in self.jobs:
            hook = getattr(job.loss, "on_epoch_start", None)
            if callable(hook):
                hook(epoch=epoch, loader=loader)

    @property
    def needs_dataset_labels(self) -> bool:
        """Whether a job's loss takes the training set's labels (``set_dataset_labels``, e.g. CRD)."""
        return any(callable(getattr(job.loss, "set_dataset_labels", None)) for job in self.jobs)

    def set_dataset_labels(self, labels: Tensor | Sequence[int] | None) -> None:
        """Hand the label of every training sample (``labels[i]``: dataset index ``i``; ``None``: the
        dataset has none) to the losses that use them (CRD's class-aware negatives); a training loop
        calls this once, before training. A loss that cannot work without labels raises here."""
        for job in self.jobs:
            hook = getattr(job.loss, "set_dataset_labels", None)
            if callable(hook):
                try:
                    hook(labels)
                except ValueError as e:
                    raise DistillerError(f"job {job.name!r}: {e}") from None

    def dry_run(self, *inputs: Any, **ctx: Any) -> None:
        """One forward in eval mode without gradients, to materialise lazily-shaped connectors and loss
        modules (needed before wrapping in DistributedDataParallel). Does not advance ``step``."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(*inputs, **ctx)
        finally:
            self.train(was)

    def summary(self, depth: int | None = None) -> str:
        """Student and teacher module trees with tap points marked (the seeds' ``show_student_net``)."""
        lines = [_tree("student", self.student, self._student_taps, depth)]
        for n, t in self._teachers.items():
            lines.append(_tree(f"teacher {n!r}", t, self._teacher_taps.get(n, []), depth))
        lines.append("jobs:")
        for j in self.jobs:
            lines.append(f"  {j.name}: {type(j.loss).__name__} × {j.spec.weight} (warm-up {j.spec.warmup_iters}) "
                         f"student {j.spec.student} ← teachers {j.teacher_names} {j.spec.teacher}")
        return "\n".join(lines)

    def close(self) -> None:
        """Remove every hook from the student and the teachers (also done on garbage collection)."""
        self._student_tapper.close()
        for t in self._teacher_tappers.values():
            t.close()

    def __enter__(self) -> "Distiller":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _check_devices(self, inputs: tuple[Any, ...] = ()) -> None:
        """The student takes the batch as it comes, so it must be on the student's device (teachers get
        theirs moved)."""
        here = self._here()
        s_dev = here.device if here is not None else None
        for a in inputs:
            if isinstance(a, Tensor):
                if s_dev is not None and a.device != s_dev:
                    raise DistillerError(f"inputs are on {a.device} but the student is on {s_dev}; move the "
                                         f"batch with .to({str(s_dev)!r})")
                break


#: keyword arguments never routed to the models automatically: a Hugging Face model given ``labels``
#: computes its own loss (the trainer's task criterion does that once, for the student only)
CONTEXT_ONLY = frozenset({"labels"})


def _keyword_params(model: nn.Module) -> list[str]:
    """Names ``model.forward`` takes by keyword (not ``*args``/``**kwargs``)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _check_accepts(model: nn.Module, name: str, model_kw: Mapping[str, Any]) -> None:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    missing = sorted(set(model_kw) - {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)})
    if missing:
        raise DistillerError(f"teacher {name!r} ({type(model).__name__}) does not take the model input(s) {missing} "
                             f"that the student gets; give both models the same inputs, or name the inputs with "
                             f"Distiller(..., model_inputs=[...])")


def _called_through_torch_compile(depth: int = 8) -> bool:
    """True when this call came through ``torch.compile(distiller)`` (an ``OptimizedModule`` a few frames up).

    Raising inside the traced region would only make dynamo fall back to running the frame eagerly, so
    the check looks at the real call stack, which dynamo leaves to eager execution (``sys._getframe``
    is not traced). Costs a few microseconds per call.
    """
    f = sys._getframe(1).f_back
    for _ in range(depth):
        if f is None:
            return False
        me = f.f_locals.get("self")
        if me is not None and type(me).__name__ == "OptimizedModule":
            return True
        f = f.f_back
    return False


def _to(taps: Mapping[str, Any], where: Placement) -> dict[str, Any]:
    """Tapped tensors (by tap) on ``where``'s device, floating ones in its dtype (no copy when in place)."""
    return {t: to_placement(v, where.device, where.dtype) for t, v in taps.items()}


def _dtype_part(fn: Any) -> Any:
    """``fn`` (what ``Module._apply`` applies: a ``.to()``/``.cuda()``/``.half()`` …) without its device move:
    a tensor gets the dtype ``fn`` would give it and stays where it is. ``fn`` sees only an empty tensor."""
    def cast(t: Tensor) -> Tensor:
        new = fn(torch.empty(0, dtype=t.dtype, device=t.device))
        return t.to(new.dtype) if new.dtype != t.dtype else t
    return cast


def _device_of(out: Any) -> torch.device:
    if isinstance(out, Tensor):
        return out.device
    if isinstance(out, (list, tuple)) and out:
        return _device_of(out[0])
    if isinstance(out, Mapping) and out:
        return _device_of(next(iter(out.values())))
    return torch.device("cpu")


def _tree(title: str, model: nn.Module, taps: Sequence[str], depth: int | None) -> str:
    marks: dict[str, list[str]] = {}
    for tap in map(TapSpec.parse, taps):
        if tap.kind == "emit":
            continue
        where = tap.path  # a method's return is marked on the module that owns the method
        if tap.kind == "return" and not _is_module(model, tap.path):
            where = tap.path.rpartition(".")[0]
        marks.setdefault(where, []).append(tap.spec or "(output)")
    n_params = sum(p.numel() for p in model.parameters() if not isinstance(p, nn.parameter.UninitializedParameter))
    root = f"   ◀── tap {', '.join(marks[''])}" if "" in marks else ""  # the model's output or its own methods
    lines = [f"{title}: {type(model).__name__} ({n_params:,} params){root}"]
    for name, mod in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if not name or (depth is not None and level > depth and name not in marks):
            continue
        tag = f"   ◀── tap {', '.join(marks[name])}" if name in marks else ""
        lines.append(f"{'  ' * level}{name.rsplit('.', 1)[-1]}: {type(mod).__name__}{tag}")
    emits = [s for s in taps if s.startswith("@")]
    if emits:
        lines.append(f"  emitted: {', '.join(emits)}")
    return "\n".join(lines)


def _is_module(model: nn.Module, path: str) -> bool:
    try:
        resolve_module(model, path)
        return True
    except ValueError:
        return False
