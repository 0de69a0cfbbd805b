"""Run logging: one CSV row per epoch, TensorBoard scalars when installed, and a progress display.

The progress display is a ``tqdm`` bar (loss, throughput) on a terminal and plain lines every
``log_every`` steps otherwise (CI logs, files), so logs stay readable either way.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any, TextIO


class CSVLog:
    """``metrics.csv`` in the run directory; columns are fixed by the first row written.

    On resume, rows of epochs after the checkpoint's are dropped (they belong to the lost run).
    """

    def __init__(self, path: str | Path, resume_epoch: int | None = None) -> None:
        self.path = Path(path)
        self.fields: list[str] | None = None
        if resume_epoch is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if int(r.get("epoch", 0) or 0) <= resume_epoch]
                self.fields = list(reader.fieldnames or []) or None
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        if self.fields is None:
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([])
        extra = [k for k in row if k not in self.fields]
        if extra:  # a column that appears later (e.g. eval metrics): rewrite with the wider header
            rows = read_csv(self.path)
            self.fields += extra
            self._rewrite(rows)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: _fmt(row.get(k, "")) for k in self.fields})


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` as dicts of strings (``[]`` if the file is missing)."""
    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


class TensorBoard:
    """``SummaryWriter`` scalars if ``tensorboard`` is installed; silently nothing otherwise."""

    def __init__(self, log_dir: str | Path, enabled: bool = True) -> None:
        self.writer: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(log_dir))
            except Exception:  # ImportError, or tensorboard missing under torch's wrapper
                self.writer = None

    def scalars(self, values: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """Per-epoch progress: tqdm on a TTY, a plain line every ``log_every`` steps elsewhere."""

    def __init__(self, epoch: int, epochs: int, total: int, log_every: int, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.epoch, self.epochs, self.total, self.log_every, self.enabled = epoch, epochs, total, log_every, enabled
        self.bar: Any = None
        self.t0 = time.perf_counter()
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", file=self.stream, leave=False,
                            dynamic_ncols=True)

    def update(self, step: int, samples: int, info: dict[str, float] | None) -> None:
        """``step`` (1-based, this epoch); ``info`` (loss, …) is given every ``log_every`` steps."""
        if not self.enabled:
            return
        rate = samples / max(1e-9, time.perf_counter() - self.t0)
        if self.bar is not None:
            self.bar.update(1)
            if info is not None:
                self.bar.set_postfix({**{k: f"{v:.4g}" for k, v in info.items()}, "img/s": f"{rate:.0f}"})
        elif info is not None:
            parts = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            print(f"epoch {self.epoch}/{self.epochs} step {step}/{self.total} {parts} {rate:.0f} samples/s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def say(msg: str, enabled: bool = True, stream: TextIO | None = None) -> None:
    """A plain progress line (rank 0 only: pass ``enabled=ctx.is_main``)."""
    if enabled:
        print(msg, file=stream or sys.stderr, flush=True)
