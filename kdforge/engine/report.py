"""Text reports for the CLI: comparing finished runs, and listing a model's tappable modules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from ..config import ConfigError
from .logging import read_csv


def human(n: float | int | None) -> str:
    """``1234567`` → ``"1.23M"``; ``None`` → ``"-"``."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return str(int(n))


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``summary.json`` (:class:`ConfigError` naming the directory if absent)."""
    p = Path(run_dir) / "summary.json"
    if not p.is_file():
        raise ConfigError(f"{run_dir} has no summary.json; is it a finished kdforge run directory "
                          f"(the output_dir of `kdforge train`)?")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p} is not valid JSON ({e}); rerun the training or delete the directory") from None


def _metric_values(s: dict[str, Any], metric: str) -> tuple[float | None, float | None]:
    best = s.get("best") or {}
    final = (s.get("final") or {}).get(metric)
    if best.get("metric") == metric:
        return best.get("value"), final
    curve = [float(r[f"eval_{metric}"]) for r in read_csv(Path(s["run_dir"]) / "metrics.csv")
             if r.get(f"eval_{metric}")]
    return (max(curve) if curve else final), final


def _report_metrics(summaries: list[dict[str, Any]]) -> tuple[str, ...]:
    """The task's ``report_metrics``: fractions in [0, 1] (mIoU, pixel_acc, mAP, mAP50, …) shown with
    4 decimals, the others next to the main metric; empty for tasks without them (classification)."""
    from ..registry import TASKS

    try:
        return tuple(getattr(TASKS.get(summaries[0].get("task") or "classification"), "report_metrics", ()))
    except Exception:  # a task not registered in this process
        return ()


def compare_runs(runs: Sequence[str | Path], baseline: str | Path | None = None, metric: str | None = None,
                 plot: str | Path | None = None) -> tuple[str, str]:
    """``(table, note)``: one row per run with params, MACs, best/final metric, train time and the
    best metric's delta vs ``baseline`` (default: the first run); ``plot`` writes metric curves."""
    dirs = [Path(r) for r in runs]
    base_dir = Path(baseline) if baseline else dirs[0]
    if base_dir not in dirs:
        dirs.insert(0, base_dir)
    summaries = []
    for d in dirs:
        s = read_summary(d)
        s["run_dir"] = str(d)
        summaries.append(s)
    metric = metric or summaries[0].get("main_metric") or "top1"
    base_best = _metric_values(summaries[dirs.index(base_dir)], metric)[0]
    fractions = _report_metrics(summaries)
    extra = [m for m in fractions if m != metric and all(m in (s.get("final") or {}) for s in summaries)]
    fmt = "{:.4f}" if metric in fractions else "{:.2f}"
    header = ["run", "model", "params", "MACs", f"best {metric}", f"final {metric}",
              *[f"final {m}" for m in extra], "train time", "delta"]
    rows = []
    for d, s in zip(dirs, summaries):
        best, final = _metric_values(s, metric)
        delta = "(baseline)" if d == base_dir else ("-" if best is None or base_best is None
                                                     else fmt.replace("{:", "{:+").format(best - base_best))
        rows.append([s.get("name", d.name), s.get("model", "?"), human(s.get("params")), human(s.get("macs")),
                     "-" if best is None else fmt.format(best), "-" if final is None else fmt.format(final),
                     *[f"{s['final'][m]:.4f}" for m in extra], f"{s.get('train_time_s', 0.0):.1f}s", delta])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = "" if plot is None else _plot(dirs, summaries, metric, Path(plot))
    return "\n".join(lines), note


def _plot(dirs: list[Path], summaries: list[dict[str, Any]], metric: str, out: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was written (pip install matplotlib)"
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    for d, s in zip(dirs, summaries):
        rows = read_csv(d / "metrics.csv")
        label = s.get("name", d.name)
        pts = [(int(r["epoch"]), float(r[f"eval_{metric}"])) for r in rows if r.get(f"eval_{metric}")]
        if pts:
            ax_m.plot(*zip(*pts), marker="o", label=label)
        loss = [(int(r["epoch"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
        if loss:
            ax_l.plot(*zip(*loss), label=label)
    ax_m.set(xlabel="epoch", ylabel=metric, title=f"eval {metric}")
    ax_l.set(xlabel="epoch", ylabel="loss", title="training loss")
    for ax in (ax_m, ax_l):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return f"plot written to {out}"


# ------------------------------------------------------------------------------------------ inspect
def parse_kwargs(items: Sequence[str]) -> dict[str, Any]:
    """``["num_classes=10", "in_channels=1"]`` → ``{"num_classes": 10, "in_channels": 1}`` (YAML values)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"model argument {item!r} must look like key=value (e.g. num_classes=10)")
        out[key] = yaml.safe_load(raw)
    return out


def _shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_shape(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in x.items()) + "}"
    return type(x).__name__


def inspect_model(name: str, kwargs: Sequence[str] = (), input_shape: str | None = None,
                  depth: int | None = None) -> str:
    """Every module path of ``build_model(name, **kwargs)`` with its type and output shape for one
    random sample — the strings to use as taps (``"layer3"``, ``"fc:input"``, ``""`` = the output)."""
    from ..models import build_model, count_macs, count_params

    from ..models.input_shape import default_input_shape

    kw = parse_kwargs(kwargs)
    model = build_model(name, **kw)
    if input_shape:
        try:
            shape = tuple(int(v) for v in input_shape.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"--input-shape {input_shape!r} must look like C,H,W (e.g. 1,28,28)") from None
        source = "--input-shape"
    else:
        shape, learnt = default_input_shape(name, model, kw)
        source = (f"from {learnt}" if learnt else
                  f"assumed: the model does not state its input size; pass --input-shape C,H,W if it expects another")
    x = torch.randn(1, *shape)
    outs: dict[str, Any] = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: outs.setdefault(n, o))
             for n, m in model.named_modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        raise ConfigError(f"{name} does not run on an input of shape {tuple(x.shape)}: {e}. "
                          f"Pass --input-shape C,H,W matching the model (and --kwargs in_channels=...)") from None
    finally:
        for h in hooks:
            h.remove()
    rows = [("(output)" if not n else n, type(m).__name__, _shape(outs[n]) if n in outs else "(not called)")
            for n, m in model.named_modules() if depth is None or (n.count(".") + 1 if n else 0) <= depth]
    widths = [max(len(r[i]) for r in rows + [("tap path", "type", "output shape")]) for i in range(3)]
    lines = [f"{name}: {count_params(model):,} params, {human(count_macs(model, x))} MACs, "
             f"input {tuple(x.shape)} ({source})",
             "  ".join(h.ljust(w) for h, w in zip(("tap path", "type", "output shape"), widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append('Tap "PATH" for a module\'s output, "PATH:input" for its input, "" for the model output.')
    return "\n".join(lines)

