"""Per-method results table: every recipe in configs/fmnist/methods/ against the baseline, over seeds,
for two teacher → student pairs.

Protocol (issue 16): any choice is made on the *selection* seed (0) only; the table's mean ± std comes from
the *report* seeds (default 1,2,3), which were not used to choose. Each run is an ordinary
`kdforge train CONFIG --set seed=S ...` in its own run directory, so a killed sweep continues where it
stopped (a run counts as done when its summary.json exists). The teachers are trained once, on the
same training subset, with the pair's teacher config (seed 0 → `teacher`, seed 1 → `teacher2`).

Pairs (`--pair`):
  cnn     the demo pair, the recipes as written: CNN 8-16-32 ← CNN 32-64-128 (configs/fmnist/teacher.yaml)
  resnet  resnet8x4 ← resnet32x4 (the CIFAR-100 pair of mdistiller/RepDistiller) on 1×28×28: the same
          recipes with the models swapped and every tap mapped to the ResNet's modules by
          `pair_overrides` (teacher: configs/fmnist/teacher_resnet32x4.yaml)

    python benchmarks/zoo.py --subset 5000 --epochs 3 --workers 2          # run what is missing, write the doc
    python benchmarks/zoo.py --report-only                                  # rewrite the pair's section
    python benchmarks/zoo.py --pair resnet --subset 60000 --epochs 5 --teacher-epochs 8 --workers 8 \\
        --set data.num_workers=2                                            # a GPU machine

Scale: the CPU budget here does not allow the full 60k-image, 5-epoch recipe for 27 methods × 4 seeds,
so the sweep trains on the first `--subset` training images (all runs, teachers included) and evaluates
on the full 10k test set; the top-1 reported is the *last* epoch's (never the best-on-test epoch).
Runs use the config's device (`auto`: cuda when present). Each pair writes its own section of
docs/benchmarks.md (between `<!-- zoo:PAIR -->` markers; the other pair's section is kept) and its plot
(docs/img/zoo_fmnist.png, docs/img/zoo_resnet.png).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
METHODS_DIR = ROOT / "configs" / "fmnist" / "methods"
ORDER = ["baseline", "kd", "dkd", "dist", "logit_std", "fitnet", "at", "ft", "ab", "ofd", "vid", "nst", "mgd", "cwd",
         "rkd", "crd", "irg", "pkt", "sp", "cc", "byot", "multi_teacher_mean", "multi_teacher_confidence", "meal_v2",
         "kd_at", "kd_fitnet", "kd_crd"]


class PairError(ValueError):
    """A method config that cannot be moved to another model pair (a tap with no equivalent there)."""


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model as a config names it; ``blocks``: residual blocks per stage (ResNets), for taps inside a stage."""

    name: str
    kwargs: Mapping[str, Any]
    blocks: int = 0


#: the CNN's tap paths (kdforge/models/cnn.py, as configs/fmnist/methods tap them) → the CIFAR ResNet's
#: (kdforge/models/resnet.py). ``stages.i`` is stage i's output after ReLU (and pooling), the ResNet's
#: ``layer{i+1}`` its stage output after the last residual ReLU. ``stages.i.bn`` is the pre-ReLU BN output
#: that OFD / AB / MGD tap (OFD reads its margin from that BN); the ResNet's closest module is the last
#: block's ``bn2`` (the BN before the residual sum and the final ReLU), as configs/cifar100/ofd.yaml taps
#: it — the official code taps the residual sum itself, which is no module here. ``{last}`` is the index of
#: the last block of the model the tap is on (0 for resnet8x4, 4 for resnet32x4).
RESNET_TAPS: dict[str, str] = {
    "": "", "fc": "fc", "avgpool": "avgpool",
    "stages.0": "layer1", "stages.1": "layer2", "stages.2": "layer3",
    "stages.0.bn": "layer1.{last}.bn2", "stages.1.bn": "layer2.{last}.bn2", "stages.2.bn": "layer3.{last}.bn2",
}


@dataclass(frozen=True)
class Pair:
    """One teacher → student pair of the sweep. ``taps`` None: the recipes' own models and taps."""

    key: str
    title: str
    student: ModelSpec
    teacher: ModelSpec
    teacher_config: str
    out: str
    plot: str
    taps: Mapping[str, str] | None = field(default=None)


PAIRS: dict[str, Pair] = {
    "cnn": Pair("cnn", "CNN 8-16-32 ← CNN 32-64-128",
                ModelSpec("cnn", {"channels": [8, 16, 32], "num_classes": 10, "in_channels": 1}),
                ModelSpec("cnn", {"channels": [32, 64, 128], "num_classes": 10, "in_channels": 1}),
                "configs/fmnist/teacher.yaml", "runs/zoo", "docs/img/zoo_fmnist.png"),
    "resnet": Pair("resnet", "resnet8x4 ← resnet32x4",
                   ModelSpec("resnet8x4", {"num_classes": 10, "in_channels": 1}, blocks=1),
                   ModelSpec("resnet32x4", {"num_classes": 10, "in_channels": 1}, blocks=5),
                   "configs/fmnist/teacher_resnet32x4.yaml", "runs/zoo_resnet", "docs/img/zoo_resnet.png",
                   taps=RESNET_TAPS),
}

#: the names a job's fields go by in a raw config (DistillJob's aliases)
_JOB_KEYS = {"student": ("student", "student_taps", "student_module", "student_layers"),
             "teacher": ("teacher", "teacher_taps", "teacher_module", "teacher_layers"),
             "teachers": ("teachers", "teacher_names")}


def map_tap(spec: str, model: ModelSpec, taps: Mapping[str, str], where: str) -> str:
    """``spec`` (a CNN tap, with its ``:kind`` and selectors) on ``model`` through ``taps``; no equivalent raises."""
    path, sep, rest = spec.partition(":")
    if path not in taps:
        known = ", ".join(repr(k) for k in taps)
        raise PairError(f"{where}: tap {spec!r} has no equivalent on {model.name}; benchmarks/zoo.py maps only "
                        f"{known} (add the module to RESNET_TAPS, or leave this method out with --methods)")
    if "{last}" in taps[path] and model.blocks < 1:
        raise PairError(f"{where}: tap {spec!r} needs the number of blocks per stage of {model.name}")
    return taps[path].format(last=model.blocks - 1) + sep + rest


def _job_key(job: Mapping[str, Any], field_: str) -> str | None:
    return next((k for k in _JOB_KEYS[field_] if k in job), None)


def _unmapped_paths(value: Any, where: str) -> None:
    """Refuse a CNN module path left anywhere else in a job (e.g. a loss's ``teacher_bn``)."""
    if isinstance(value, str):
        if re.match(r"stages(\.|$|:)", value):
            raise PairError(f"{where}: {value!r} names a CNN module and benchmarks/zoo.py does not map this field; "
                            f"map it in pair_overrides or leave this method out with --methods")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _unmapped_paths(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _unmapped_paths(v, f"{where}.{i}")


def pair_overrides(method_cfg: Mapping[str, Any], pair: str | Pair) -> list[str]:
    """The ``--set`` overrides that move a CNN method config (merged, ``base:`` resolved) to ``pair``.

    Swaps the student's and every teacher's model (``teacher2`` is the same architecture as
    ``teacher``, trained on another seed) and maps every job's student and teacher taps with
    :func:`map_tap`: student taps on the student, teacher taps on the teachers (on the student for
    ``teachers: [self]``). Raises :class:`PairError` for a tap with no equivalent. The ``cnn`` pair is
    the configs' own: no overrides.
    """
    p = PAIRS[pair] if isinstance(pair, str) else pair
    if p.taps is None:
        return []
    sets = [f"student.name={p.student.name}", f"student.kwargs={json.dumps(dict(p.student.kwargs))}"]
    for name in method_cfg.get("teachers") or {}:
        sets += [f"teachers.{name}.name={p.teacher.name}", f"teachers.{name}.kwargs={json.dumps(dict(p.teacher.kwargs))}"]
    for i, job in enumerate(method_cfg.get("jobs") or []):
        if not isinstance(job, Mapping):
            raise PairError(f"jobs.{i}: expected a mapping, got {type(job).__name__}")
        tk = _job_key(job, "teachers")
        names = job.get(tk) if tk else None
        names = [names] if isinstance(names, str) else list(names or [])
        # the models the teacher taps are read from: the student itself for self-distillation
        on = [p.student] if names == ["self"] else [p.teacher] if "self" not in names else [p.student, p.teacher]
        for side, models in (("student", [p.student]), ("teacher", on)):
            key = _job_key(job, side)
            if key is None:
                raise PairError(f"jobs.{i}: no {side} taps")
            specs = [job[key]] if isinstance(job[key], str) else list(job[key])
            mapped = []
            for j, spec in enumerate(specs):
                where = f"{method_cfg.get('name', 'config')}: jobs.{i}.{key}.{j}"
                outs = {map_tap(spec, m, p.taps, where) for m in models}
                if len(outs) > 1:
                    raise PairError(f"{where}: tap {spec!r} is on the student and on a teacher, where it maps to "
                                    f"different modules ({sorted(outs)})")
                mapped.append(outs.pop())
            if mapped != specs:
                sets.append(f"jobs.{i}.{key}={json.dumps(mapped)}")
        taps_keys = {k for ks in _JOB_KEYS.values() for k in ks}
        _unmapped_paths({k: v for k, v in job.items() if k not in taps_keys}, f"jobs.{i}")
    return sets


NOTES = [
    "## What these tables are not",
    "",
    "- **Two pairs, one GPU, two scales.** Both sections were measured on one H100 (12 runs at a time on",
    "  the one GPU, one CPU thread each, so the absolute epoch seconds include that sharing; the ratios",
    "  compare runs that shared it alike). The CNN section is the demo pair at the demo's full recipe",
    "  (60k images, 5 epochs: the baseline is the README's ~85 %). The ResNet section is the CIFAR-100",
    "  reference pair of mdistiller/RepDistiller (resnet8x4 ← resnet32x4) adapted to 1×28×28 inputs",
    "  (`in_channels: 1`), on the first 10k training images (27 methods × 4 seeds had to fit one",
    "  10-minute GPU call), running the *same* recipes: `pair_overrides` in benchmarks/zoo.py swaps the",
    "  models and maps every tap (`stages.i` → `layer{i+1}`, the pre-ReLU `stages.i.bn` → the last block's",
    "  `bn2`, `fc`/`fc:input`/logits unchanged; a tap with no equivalent is an error); its teachers come",
    "  from `configs/fmnist/teacher_resnet32x4.yaml`. The recipes' weights are the official ones, set for",
    "  neither pair (no tuning in either), and the two pairs rank the methods differently: the feature",
    "  methods (FitNet, AT, AB, OFD) help the ResNet student, whose stages are as wide as the teacher's",
    "  over 4, and hurt the 8-16-32 CNN, whose stages are 4× narrower than its teacher's. The CIFAR-100",
    "  recipes (`configs/cifar100/`, `benchmarks/cifar100.sh`, docs/cifar100.md) are the full-scale route.",
    "- **Fashion-MNIST is easy.** Teachers reach ~90 %, students ~83-85 %: the headroom a teacher can",
    "  transfer is a few points, and no result here says how a method ranks on CIFAR-100 or ImageNet.",
    "- **Live teachers.** Every distilled run recomputes its teachers; the teacher cache (docs/cache.md)",
    "  would make the logit methods cost what the baseline costs, but the epoch-time columns are meant to",
    "  show what each method costs when run plainly.",
    "- **CRD** (both pairs) samples its negatives from other classes (the official recipe, kdforge's",
    "  default), with K = min(1024, subset/3) negatives instead of 16384 (officially K is a third of CIFAR's 50000",
    "  images; K=16384 exceeds a small subset, and ran at ~10 s per step on one CPU thread).",
]

HEAD = [
    "# Per-method results (Fashion-MNIST)",
    "",
    "Written by `python benchmarks/zoo.py --pair {cnn,resnet}` from the runs in its output directory, one",
    "section per teacher → student pair; every number below is a measured run of the shipped recipe in",
    "`configs/fmnist/methods/<method>.yaml` through `kdforge train` (for the ResNet pair with the models and",
    "taps swapped by `--set` overrides, see the notes at the end).",
    "",
    "**Protocol.** Each section names its selection seed (shown separately) and its report seeds: the",
    "mean ± std (sample std) and Δ come from the report seeds only. No weight, temperature or layer was",
    "tuned for these tables: every recipe uses the official code's defaults and weights (the reason for",
    "any adaptation is written in its config). Δ is the mean over report seeds of (method − baseline) on",
    "the same seed, ± the std of those paired differences. Epoch time is the median epoch (teacher",
    "forwards included: live teachers, no cache) over all of a method's seeds, in seconds and relative to",
    "the baseline's. Top-1 is the last epoch's, never the best-on-test epoch; every run, teachers",
    "included, trains on the first `subset` Fashion-MNIST training images and is evaluated on the full",
    "10k test set.",
]


def _marker(pair: str) -> tuple[str, str]:
    return f"<!-- zoo:{pair} -->", f"<!-- /zoo:{pair} -->"


def _placeholder(pair: str) -> str:
    p = PAIRS[pair]
    return "\n".join([f"## {p.title}", "", f"Not measured yet: `python benchmarks/zoo.py --pair {pair}` writes this "
                      f"section from the runs in `{p.out}`."])


def sections_of(doc: str) -> dict[str, str]:
    """The body between each pair's markers in a written doc (pairs without markers are absent)."""
    out = {}
    for pair in PAIRS:
        start, end = _marker(pair)
        m = re.search(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), doc, re.S)
        if m:
            out[pair] = m.group(1).rstrip("\n")
    return out


def splice_section(doc: str | None, pair: str, body: str) -> str:
    """The whole doc with ``pair``'s section set to ``body``; every other pair's section is kept from
    ``doc`` (a placeholder where it has none); the shared head and notes are written afresh."""
    bodies = sections_of(doc or "")
    bodies[pair] = body.rstrip("\n")
    lines = list(HEAD)
    for key in PAIRS:
        start, end = _marker(key)
        lines += ["", start, bodies.get(key, _placeholder(key)), end]
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def _run(cmd: list[str], log: Path, threads: int = 1) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _done(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


def check_done(run_dir: Path, subset: int, epochs: int, model: str) -> None:
    """A finished run is reused, never rerun: refuse one whose config.yaml has another training subset,
    epoch count or student model than this sweep asks for (a run dir from another setting or pair)."""
    import yaml

    path = run_dir / "config.yaml"
    if not _done(run_dir) or not path.exists():
        return
    cfg = yaml.safe_load(path.read_text()) or {}
    have = {"data.train_subset": (cfg.get("data") or {}).get("train_subset"),
            "train.epochs": (cfg.get("train") or {}).get("epochs"),
            "student.name": (cfg.get("student") or {}).get("name")}
    want = {"data.train_subset": subset, "train.epochs": epochs, "student.name": model}
    diff = [f"{k} {have[k]} (asked {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        raise SystemExit(f"zoo: {run_dir} is a finished run of another setting: {', '.join(diff)}; use another --out")


def _set_args(sets: Sequence[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def train_teachers(out: Path, subset: int, teacher_epochs: int, workers: int, pair: str = "cnn",
                   extra: Sequence[str] = (), threads: int = 1) -> dict[str, Path]:
    """Train ``teacher`` (seed 0) and ``teacher2`` (seed 1) with the pair's teacher config, unless done."""
    jobs = {"teacher": 0, "teacher2": 1}
    dirs = {name: out / f"teacher_seed{seed}" for name, seed in jobs.items()}
    for d in dirs.values():
        check_done(d, subset, teacher_epochs, PAIRS[pair].teacher.name)

    def one(name: str) -> None:
        d = dirs[name]
        if _done(d):
            return
        cmd = [sys.executable, "-m", "kdforge", "train", PAIRS[pair].teacher_config, "--out", str(d), "--overwrite",
               "--quiet", "--set", f"seed={jobs[name]}", "--set", f"data.train_subset={subset}",
               "--set", f"train.epochs={teacher_epochs}", *_set_args(extra)]
        d.parent.mkdir(parents=True, exist_ok=True)
        if _run(cmd, out / f"teacher_{name}.log", threads) != 0:
            raise SystemExit(f"teacher {name} failed; see {out / f'teacher_{name}.log'}")

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, jobs))
    return dirs


def method_command(method: str, seed: int, run_dir: Path, subset: int, epochs: int,
                   teachers: dict[str, Path], pair: str = "cnn", extra: Sequence[str] = ()) -> list[str]:
    """The ``kdforge train`` command of one run: the recipe, its seed and scale, the sweep's teachers,
    the pair's model and tap overrides, CRD's memory bank sized to the subset, then ``extra``."""
    from kdforge.config.loading import read_config

    path = METHODS_DIR / f"{method}.yaml"
    raw = read_config(path)
    cmd = [sys.executable, "-m", "kdforge", "train", str(path.relative_to(ROOT)), "--out", str(run_dir), "--quiet",
           "--set", f"seed={seed}", "--set", f"data.train_subset={subset}", "--set", f"train.epochs={epochs}"]
    if (run_dir / "last.pt").exists():
        cmd.append("--resume")
    else:
        cmd.append("--overwrite")
    for name in raw.get("teachers") or {}:
        cmd += ["--set", f"teachers.{name}.weights={teachers[name] / 'best.pt'}"]
    cmd += _set_args(pair_overrides(raw, pair))
    for i, job in enumerate(raw.get("jobs") or []):
        loss = job.get("loss")
        if isinstance(loss, dict) and loss.get("type") == "crd":
            # the memory bank indexes the subset; the official K=16384 is a third of CIFAR's 50000 samples
            # and costs ~10 s per step on one CPU thread: keep K at a third of the subset, at most 1024
            cmd += ["--set", f"jobs.{i}.loss.n_data={subset}", "--set", f"jobs.{i}.loss.nce_k={min(1024, subset // 3)}"]
    return cmd + _set_args(extra)


def sweep(out: Path, methods: list[str], seeds: list[int], subset: int, epochs: int, workers: int,
          teachers: dict[str, Path], pair: str = "cnn", extra: Sequence[str] = (), threads: int = 1) -> None:
    """Run every (method, seed) not done yet, ``workers`` at a time."""
    # seed-major order: the selection seed of every method first, then each report seed
    tasks = [(m, s) for s in seeds for m in methods]
    todo = [(m, s) for m, s in tasks if not _done(out / m / f"seed{s}")]
    print(f"zoo[{pair}]: {len(tasks) - len(todo)} of {len(tasks)} runs done; {len(todo)} to run", flush=True)
    for m, s in tasks:
        check_done(out / m / f"seed{s}", subset, epochs, PAIRS[pair].student.name)
    for m in methods:  # a tap with no equivalent fails here, before any run
        try:
            method_command(m, 0, out / m / "seed0", subset, epochs, teachers, pair, extra)
        except PairError as e:
            raise SystemExit(f"zoo[{pair}]: {m}: {e}") from None

    def one(task: tuple[str, int]) -> None:
        m, s = task
        d = out / m / f"seed{s}"
        d.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        rc = _run(method_command(m, s, d, subset, epochs, teachers, pair, extra), out / m / f"seed{s}.log", threads)
        print(f"zoo[{pair}]: {m:26s} seed {s}: {'ok' if rc == 0 else f'FAILED rc={rc}'} ({time.time() - t0:.0f} s)",
              flush=True)

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, todo))


META = "zoo_meta.json"
#: settings that change the numbers: a run dir holds runs of one setting only
_FIXED = ("pair", "subset", "epochs", "teacher_epochs")


def record_meta(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the sweep's settings (and the machine's GPU name) to ``out/zoo_meta.json``; refuse a run dir
    whose runs were made with other settings, since finished runs are never rerun."""
    path = out / META
    if path.exists():
        old = json.loads(path.read_text())
        diff = [f"{k}: {old.get(k)} there, {meta[k]} now" for k in _FIXED if k in old and old.get(k) != meta[k]]
        if diff:
            raise SystemExit(f"zoo: {out} holds runs made with other settings ({'; '.join(diff)}); use another --out "
                             f"or the same settings")
        if old.get("sets") != meta.get("sets"):
            print(f"zoo: warning: --set differs from the runs already in {out} ({old.get('sets')} there)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def machine() -> dict[str, Any]:
    """The GPU this process sees (runs use it: device ``auto``), or None."""
    import torch

    return {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "torch": torch.__version__}


def _summary(run_dir: Path) -> dict[str, Any] | None:
    return json.loads((run_dir / "summary.json").read_text()) if _done(run_dir) else None


def _result(run_dir: Path) -> tuple[float, float] | None:
    """(last-epoch top-1, median epoch time) of a finished run."""
    if not _done(run_dir):
        return None
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    summary = json.loads((run_dir / "summary.json").read_text())
    return float(summary["final"]["top1"]), statistics.median(float(r["epoch_time"]) for r in rows)


def _ms(xs: list[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def _params(n: Any) -> str:
    return "?" if not isinstance(n, int) else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def device_label(summaries: list[dict[str, Any]], meta: Mapping[str, Any]) -> str:
    """Where the runs ran, from their summaries (``cpu`` / ``cuda:0``) and the GPU name the sweep recorded."""
    devices = sorted({str(s.get("device")) for s in summaries})
    if not devices:
        return "?"
    if any(d.startswith("cuda") for d in devices):
        gpu = meta.get("gpu") or "GPU"
        return f"{gpu} ({', '.join(devices)})"
    return ", ".join(devices)


def section(pair: str, out: Path, methods: list[str], select: list[int], seeds: list[int],
            meta: Mapping[str, Any], teachers: dict[str, Path],
            plot: Path | None = None) -> tuple[str, list[tuple[str, list[float], list[float]]]]:
    """The markdown of ``pair``'s section from the runs in ``out``, and its rows (method, top-1s, Δs)."""
    p = PAIRS[pair]
    res = {m: {s: _result(out / m / f"seed{s}") for s in select + seeds} for m in methods}
    base = res.get("baseline", {})
    sums = [x for m in methods for s in select + seeds if (x := _summary(out / m / f"seed{s}"))]
    t_sums = {n: _summary(d) for n, d in teachers.items()}
    teacher_acc = {n: _result(d) for n, d in teachers.items()}
    student_params = next((s.get("params") for s in sums), None)
    teacher_params = next((s.get("params") for s in t_sums.values() if s), None)
    workers, threads = meta.get("workers", "?"), meta.get("threads", "?")
    sets = meta.get("sets") or []
    lines = [
        f"## {p.title}",
        "",
        f"**Setting.** Student `{p.student.name}` ({_params(student_params)} params); teachers `{p.teacher.name}` "
        f"({_params(teacher_params)} params) trained with `{p.teacher_config}` for {meta.get('teacher_epochs', '?')} "
        f"epochs on seed 0 (`teacher`) and seed 1 (`teacher2`, used by the multi-teacher rows and MEAL-V2). Every run "
        f"trains on the first {meta.get('subset', '?')} training images; students train {meta.get('epochs', '?')} "
        f"epochs with the demo's recipe otherwise (SGD + Nesterov, one-cycle lr 0.05, batch 128, crop + flip). "
        f"Teachers: " + (", ".join(f"`{n}` {r[0]:.2f}%" for n, r in teacher_acc.items() if r) or "not trained") + ".",
        "",
        f"**Machine.** {device_label(sums, meta)}; {workers} run(s) at a time, {threads} CPU thread(s) each"
        + (f"; extra overrides on every run: {', '.join(f'`{s}`' for s in sets)}" if sets else "") + ". "
        f"Run dir `{os.path.relpath(out, ROOT)}`; selection seed {', '.join(map(str, select))}, report seeds {', '.join(map(str, seeds))}.",
        "",
        "| method | top-1 % (seeds " + ",".join(map(str, seeds)) + ") | per seed | Δ vs baseline | seed " +
        ",".join(map(str, select)) + " | epoch s | epoch time × |",
        "|---|---|---|---|---|---|---|",
    ]
    base_t = statistics.median([base[s][1] for s in select + seeds if base.get(s)] or [float("nan")])
    rows = []
    for m in methods:
        r = res[m]
        acc = [r[s][0] for s in seeds if r[s]]
        deltas = [r[s][0] - base[s][0] for s in seeds if r[s] and base.get(s)]
        sel = [r[s][0] for s in select if r[s]]
        t = statistics.median([r[s][1] for s in select + seeds if r[s]] or [float("nan")])
        per = " / ".join(f"{r[s][0]:.2f}" if r[s] else "—" for s in seeds)
        d = "—" if m == "baseline" or not deltas else (
            f"{statistics.mean(deltas):+.2f}" + (f" ± {statistics.stdev(deltas):.2f}" if len(deltas) > 1 else ""))
        rows.append((m, acc, deltas))
        secs = "—" if t != t else f"{t:.1f}"
        ratio = "—" if t != t or base_t != base_t else f"{t / base_t:.2f}"
        lines.append(f"| {m} | {_ms(acc)} | {per} | {d} | {_ms(sel)} | {secs} | {ratio} |")
    scored = [(m, statistics.mean(ds), statistics.stdev(ds) if len(ds) > 1 else float("nan"), len(ds))
              for m, _, ds in rows if m != "baseline" and ds]
    win = [f"{m} ({d:+.2f})" for m, d, sd, n in scored if d > 0 and n > 1 and d > sd]
    weak = [f"{m} ({d:+.2f} ± {sd:.2f})" for m, d, sd, n in scored if d > 0 and not (n > 1 and d > sd)]
    lose = [f"{m} ({d:+.2f})" for m, d, sd, n in scored if d <= 0]
    lines += ["", f"**Beat the baseline by more than the spread of the paired differences:** {', '.join(win) or 'none'}.",
              f"**Ahead on average but within the spread:** {', '.join(weak) or 'none'}.",
              f"**Did not beat the baseline** (mean Δ ≤ 0; each ran its official recipe unchanged — no weight, "
              f"temperature or layer search was tried): {', '.join(lose) or 'none'}."]
    missing = [f"{m} seed {s}" for m in methods for s in select + seeds if not res[m][s]]
    img = os.path.relpath(plot or ROOT / p.plot, ROOT / "docs")
    lines += ["", "Runs not (yet) measured: " + (", ".join(missing) if missing else "none") + ".",
              "", f"![per-method Δ top-1, {p.title}]({img})"]
    return "\n".join(lines), rows


def report(out: Path, methods: list[str], select: list[int], seeds: list[int], meta: Mapping[str, Any],
           teachers: dict[str, Path], doc: Path, plot: Path, pair: str = "cnn") -> None:
    """Write ``pair``'s section of ``doc`` (keeping the other pairs') and its plot."""
    body, rows = section(pair, out, methods, select, seeds, meta, teachers, plot)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(splice_section(doc.read_text() if doc.exists() else None, pair, body))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("zoo: matplotlib missing, no plot")
        return
    have = [(m, ds) for m, _, ds in rows if m != "baseline" and ds]
    if not have:
        print(f"zoo[{pair}]: no distilled run has a baseline to compare with; no plot")
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    xs = range(len(have))
    means = [statistics.mean(ds) for _, ds in have]
    errs = [statistics.stdev(ds) if len(ds) > 1 else 0.0 for _, ds in have]
    ax.bar(xs, means, yerr=errs, capsize=3, color=["tab:green" if v > 0 else "tab:red" for v in means])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(xs), [m for m, _ in have], rotation=60, ha="right")
    ax.set_ylabel("Δ top-1 vs baseline (points)")
    ax.set_title(f"Fashion-MNIST, {PAIRS[pair].title}, seeds {','.join(map(str, seeds))} (mean ± std)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=sorted(PAIRS), default="cnn", help="teacher → student pair (default cnn)")
    p.add_argument("--out", default=None, help="sweep directory (resumable); default runs/zoo (cnn), "
                                               "runs/zoo_resnet (resnet)")
    p.add_argument("--methods", default=",".join(ORDER))
    p.add_argument("--select-seeds", default="0")
    p.add_argument("--seeds", default="1,2,3", help="report seeds")
    p.add_argument("--subset", type=int, default=5000, help="training images (first N) for every run")
    p.add_argument("--epochs", type=int, default=3, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="runs in parallel")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override appended to every run, teachers included (repeatable), e.g. data.num_workers=2")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--doc", default="docs/benchmarks.md")
    p.add_argument("--plot", default=None, help="default docs/img/zoo_fmnist.png (cnn), docs/img/zoo_resnet.png")
    a = p.parse_args(argv)
    pair = PAIRS[a.pair]
    out = (ROOT / (a.out or pair.out)).resolve()
    methods = [m for m in a.methods.split(",") if m]
    unknown = sorted(set(methods) - {f.stem for f in METHODS_DIR.glob("*.yaml")})
    if unknown:
        raise SystemExit(f"zoo: no recipe for {unknown} in {METHODS_DIR}")
    bad = [s for s in a.sets if "=" not in s]
    if bad:
        raise SystemExit(f"zoo: --set takes KEY=VALUE, got {bad}")
    select = [int(s) for s in a.select_seeds.split(",") if s]
    seeds = [int(s) for s in a.seeds.split(",") if s]
    teachers = {"teacher": out / "teacher_seed0", "teacher2": out / "teacher_seed1"}
    settings = {"pair": a.pair, "subset": a.subset, "epochs": a.epochs, "teacher_epochs": a.teacher_epochs}
    if a.report_only:
        meta_path = out / META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else settings  # older sweeps: the arguments
    else:
        meta = record_meta(out, {**settings, "workers": a.workers, "threads": a.threads, "sets": a.sets, **machine()})
        teachers = train_teachers(out, a.subset, a.teacher_epochs, a.workers, a.pair, a.sets, a.threads)
        sweep(out, methods, select + seeds, a.subset, a.epochs, a.workers, teachers, a.pair, a.sets, a.threads)
    plot = ROOT / (a.plot or pair.plot)
    report(out, methods, select, seeds, meta, teachers, ROOT / a.doc, plot, a.pair)
    print(f"zoo[{a.pair}]: wrote the {a.pair} section of {a.doc} and {a.plot or pair.plot}")


if __name__ == "__main__":
    main()
