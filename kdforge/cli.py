"""``kdforge`` command line: train | check | show | list | eval | compare | inspect | convert | cache.

Each sub-command is one :class:`Command`: a function adding its arguments and a function running it
(returning the exit status). Adding one is a few lines::

    def _convert_args(p): p.add_argument("file")

    @command("convert", "translate another toolbox's config", _convert_args)
    def convert(args): ...; return 0

Errors a user can fix (bad config field, missing data or weights, incompatible checkpoint, a run
directory in use, a full disk) print a one-paragraph message and exit with status 2 (``--debug``
shows the traceback too); anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

from .engine.report import compare_runs, inspect_model


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]
            ) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a sub-command (see the module docstring)."""
    def deco(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.append(Command(name, help, add_arguments, run))
        return run
    return deco


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'fix your input', shown without a traceback."""
    from .cache import CacheError
    from .capture import TapError
    from .config import ConfigError
    from .config.translate import TranslationError
    from .data import DatasetNotFoundError, IDXError
    from .distiller import DistillerError
    from .engine import AmpError, CheckpointError, DeviceError, TrainingError
    from .engine.rundir import RunDirError
    from .job import JobError
    from .losses import LossArgumentError, ShapeMismatchError
    from .models import WeightsError
    from .registry import RegistryError
    return (ConfigError, RegistryError, CheckpointError, TrainingError, AmpError, DeviceError, DistillerError,
            TapError, ShapeMismatchError, WeightsError, DatasetNotFoundError, TranslationError, IDXError,
            RunDirError, LossArgumentError, JobError, CacheError)


def disk_full_message(e: OSError) -> str:
    where = f" while writing {e.filename}" if e.filename else ""
    return (f"the disk is full{where} ({e.strerror or 'no space left on device'}). Checkpoints are written to a "
            f"temporary file and renamed, so the previous checkpoints are intact; free some space and continue "
            f"with --resume")


def _common_overrides(args: argparse.Namespace) -> list[str]:
    ov = list(args.set or [])
    if getattr(args, "data", None):
        ov.append(f"data.root={args.data}")
    if getattr(args, "out", None):
        ov.append(f"output_dir={args.out}")
    return ov


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a config field, e.g. --set train.epochs=3 --set model.name=resnet8 (repeatable)")
    p.add_argument("--data", metavar="DIR", help="dataset directory (sets data.root)")


# ------------------------------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                   help="continue from a checkpoint (default: the run directory's last.pt)")
    p.add_argument("--out", metavar="DIR", help="run directory (sets output_dir; default runs/<name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the earlier run in the run directory (its checkpoints, metrics, config)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--dry-run", action="store_true", help="validate the config and build the models, then stop "
                   "(the same as `kdforge check`)")


@command("train", "train a model, or distil a student from teachers (config with jobs)", _train_args)
def train_cmd(args: argparse.Namespace) -> int:
    from .engine import train

    if args.dry_run:
        return check_cmd(args)

    summary = train(args.config, _common_overrides(args), resume=args.resume, overwrite=args.overwrite,
                    verbose=not args.quiet)
    best = summary.get("best") or {}
    if best:
        print(f"{summary['name']}: best {best['metric']} = {best['value']:.2f} at epoch {best['epoch']}; "
              f"run directory {summary['run_dir']}")
    return 0


# ------------------------------------------------------------------------------------------- check
@command("check", "validate a config and build its models (student, teachers, jobs) without training",
         _add_config_args)
def check_cmd(args: argparse.Namespace) -> int:
    from .build import build_distiller, build_model_from_spec
    from .config.run import load_run_config

    cfg = load_run_config(args.config, _common_overrides(args))
    print(f"{args.config}: config valid ({len(cfg.jobs)} job(s), {len(cfg.teachers)} teacher(s), task {cfg.task}, "
          f"data {cfg.data.name}, optimizer {cfg.train.optimizer.name}, schedule {cfg.train.schedule.name})")
    if cfg.jobs:
        from .engine.trainer import check_teachers
        check_teachers(cfg)  # what `train` refuses before reading data (teacherless jobs, untrained teachers)
        with build_distiller(cfg, warn=lambda m: print(f"warning: {m}")) as distiller:
            print(distiller.summary(depth=1))
    else:
        model = build_model_from_spec(cfg.student, "student")
        n = sum(p.numel() for p in model.parameters())
        print(f"student: {cfg.student.name} ({type(model).__name__}, {n:,} params); no jobs: plain training")
    print("models built; nothing trained")
    return 0


# -------------------------------------------------------------------------------------------- show
def _show_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--defaults", action="store_true", help="also print every field left at its default")


@command("show", "print the fully merged (base: files, --set) and validated config as YAML", _show_args)
def show_cmd(args: argparse.Namespace) -> int:
    import yaml

    from .config.run import load_run_config

    cfg = load_run_config(args.config, _common_overrides(args))
    data = cfg.model_dump(mode="json", exclude_unset=not args.defaults, exclude_none=not args.defaults)
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110), end="")
    return 0


# -------------------------------------------------------------------------------------------- list
_KINDS = ("losses", "connectors", "models", "datasets", "tasks", "optimizers", "schedules")


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=_KINDS, help="what to list (default: everything)")


@command("list", "registered losses, connectors, models, datasets, tasks, optimizers and schedules", _list_args)
def list_cmd(args: argparse.Namespace) -> int:
    from .registry import ALL

    for kind in [args.kind] if args.kind else _KINDS:
        reg = ALL[kind]
        print(f"{kind}:")
        width = max(map(len, reg.names()), default=0)
        for name in reg.names():
            line = f"  {name:<{width}}  {reg.describe(name)}"
            if kind in ("losses", "connectors", "schedules", "datasets"):
                defaults = ", ".join(f"{k}={v!r}" for k, v in reg.defaults(name).items())
                line += f"  ({defaults})" if defaults else ""
            print(line)
    return 0


# ------------------------------------------------------------------------------------------- eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p)
    p.add_argument("--weights", metavar="PATH", help="state dict or kdforge checkpoint (default: model.weights)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


@command("eval", "evaluate weights of the config's model on its evaluation set", _eval_args)
def eval_cmd(args: argparse.Namespace) -> int:
    from .engine import evaluate_weights

    res = evaluate_weights(args.config, args.weights, _common_overrides(args))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        shown = "  ".join(f"{k}={v:.4g}" for k, v in res["metrics"].items())
        print(f"{res['model']} ({res['weights']}) on {res['samples']} samples: {shown}")
    return 0


# ---------------------------------------------------------------------------------------- compare
def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (with summary.json)")
    p.add_argument("--baseline", metavar="RUN_DIR", help="run the deltas are taken against (default: the first)")
    p.add_argument("--metric", help="metric to compare (default: the task's main metric)")
    p.add_argument("--plot", metavar="PNG", default="compare.png", help="metric curves (default compare.png)")
    p.add_argument("--no-plot", action="store_true", help="skip the plot")


@command("compare", "table (params, MACs, best/final metric, time, delta) and curves of runs", _compare_args)
def compare_cmd(args: argparse.Namespace) -> int:
    table, note = compare_runs(args.runs, args.baseline, args.metric, None if args.no_plot else args.plot)
    print(table)
    if note:
        print(note)
    return 0


# ---------------------------------------------------------------------------------------- inspect
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name (resnet8), torchvision:NAME, timm:NAME or package.module:callable")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="one sample's shape (default: what the model states — timm's pretrained_cfg, torchvision's "
                        "weights metadata — else in_channels,32,32, which the output marks as assumed)")
    p.add_argument("--kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model arguments, e.g. --kwargs num_classes=10 in_channels=1")
    p.add_argument("--depth", type=int, default=None, help="show modules up to this nesting depth")


@command("inspect", "list a model's tappable module paths with types and output shapes", _inspect_args)
def inspect_cmd(args: argparse.Namespace) -> int:
    print(inspect_model(args.model, args.kwargs, args.input_shape, args.depth))
    return 0


# ---------------------------------------------------------------------------------------- convert
def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="another toolbox's config: United-Perception/EOD YAML, mslim or MMRazor (.py/.yaml)")
    p.add_argument("--source", default=None, help="force the source format (united_perception, mslim, mmrazor)")
    p.add_argument("-o", "--output", metavar="YAML", help="write the kdforge config here instead of printing it")


@command("convert", "translate another toolbox's distillation config into a kdforge YAML", _convert_args)
def convert_cmd(args: argparse.Namespace) -> int:
    import warnings

    from .config.translate import TranslationWarning, convert_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TranslationWarning)
        text = convert_file(args.file, args.source)
    for w in caught:
        print(f"kdforge convert: warning: {w.message}", file=sys.stderr)
    if args.output:
        from pathlib import Path
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


# ------------------------------------------------------------------------------------------ cache
def _topk_arg(v: str) -> int | None:
    if v == "all":
        return None
    try:
        k = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--topk takes a number of logits or 'all', got {v!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--topk must be >= 1 (or 'all'), got {k}")
    return k


def _views_arg(v: str) -> int:
    try:
        k = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--views takes a whole number >= 1, got {v!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--views must be >= 1 (views stored per sample), got {k}")
    return k


def _cache_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="run the config's teachers over K augmented views of the training set once",
                       description="Run the config's teachers once over K augmented views of every training sample "
                                   "and store the views' augmentation parameters and the teachers' tapped tensors. "
                                   "Train from it with teacher_cache: DIR in the config (or --set teacher_cache=DIR).")
    _add_config_args(b)
    b.add_argument("--views", type=_views_arg, required=True, metavar="K",
                   help="augmented views per sample (1 = the same view every epoch; K cycles through K views)")
    b.add_argument("--out", metavar="DIR", help="cache directory (default: the config's teacher_cache)")
    b.add_argument("--topk", type=_topk_arg, default=None, metavar="k|all",
                   help="keep only the k largest teacher logits (+ their log-sum-exp) of taps that kd/dkd/dist read "
                        "(default all)")
    b.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16",
                   help="storage of teacher tensors (default fp16)")
    b.add_argument("--batch-size", type=int, default=None, help="teacher batch (default: data.eval_batch_size or "
                                                                 "data.batch_size)")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    i = sub.add_parser("info", help="what a cache holds and what it was built from")
    i.add_argument("dir", metavar="DIR")


@command("cache", "teacher-output cache: `cache build` once, then train with teacher_cache: DIR", _cache_args)
def cache_cmd(args: argparse.Namespace) -> int:
    from .cache import TeacherCache, build_cache

    if args.cache_command == "info":
        c = TeacherCache(args.dir)
        m = c.manifest
        print(f"{args.dir}: {m['dataset']['length']} samples × {m['views']} view(s), {m['dtype']}, "
              f"top-k {m['topk'] or 'all'}, {c.nbytes() / 2**20:.1f} MiB, kdforge {m['kdforge_version']}")
        print(f"  dataset {m['dataset']['name']}, augmentation {m['dataset']['transform']}")
        for n, t in m["teachers"].items():
            taps = ", ".join(f"{k!r} {e['shape']} {e['storage']}" + (f" k={e['k']}" if "k" in e else "")
                             for k, e in t["taps"].items())
            print(f"  teacher {n}: {t['fingerprint']['model']} (sha256 {str(t['fingerprint']['sha256'])[:12]}), "
                  f"taps {taps}")
        print(f"  built with: {m['build_command']} in {m['build_seconds']} s")
        return 0
    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data.root={args.data}")
    build_cache(args.config, args.views, args.out, args.topk, args.dtype, overrides, args.batch_size,
                verbose=not args.quiet)
    return 0


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="kdforge", description="Knowledge distillation for PyTorch.")
    parser.add_argument("--version", action="version", version=f"kdforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS:
        c.add_arguments(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdforge`` console script and ``python -m kdforge``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    run = next(c.run for c in COMMANDS if c.name == args.command)
    try:
        return run(args)
    except user_errors() as e:
        return _user_error(args, str(e).strip() or type(e).__name__)
    except OSError as e:
        from .engine.checkpoint import DISK_FULL
        if e.errno in DISK_FULL:
            return _user_error(args, disk_full_message(e))
        raise
    except KeyboardInterrupt:
        print(f"kdforge {args.command}: interrupted", file=sys.stderr)
        return 130



def _user_error(args: argparse.Namespace, msg: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"kdforge {args.command}: error: {msg}", file=sys.stderr)
    return 2
