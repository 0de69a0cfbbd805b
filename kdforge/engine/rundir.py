"""One run per directory: the start-up check of a run directory and the lock that holds it.

A run directory belongs to one run. :func:`claim_run_dir` is called before any data or model is
built and

* refuses a path that is a file (``--out`` pointing at a file);
* refuses a directory that already holds files unless the run resumes (``--resume``) or replaces
  the old run (``--overwrite``, which removes only the files kdforge writes there);
* takes ``.kdforge.lock`` — an ``flock``-ed file holding the PID, host and start time — so a second
  process on the same directory stops with the PID of the first. The kernel drops the ``flock``
  when a process dies (even by ``kill -9``), so a lock left behind by a dead run is *stale*: it is
  detected, reported and taken over;
* deletes the ``*.tmp`` files of checkpoint writes that an earlier process did not finish.

The lock is released (and the file removed) by :meth:`RunLock.release`; a directory created by the
claim and still empty then is removed again, so a run that fails at start-up leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

try:  # POSIX; on other systems the lock falls back to the PID check alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".kdforge.lock"

#: what kdforge writes in a run directory (``--overwrite`` removes exactly these)
RUN_FILES = ("best.pt", "last.pt", "epoch_*.pt", "metrics.csv", "summary.json", "config.yaml",
             "config.resume-*.yaml", ".*.tmp", "*.png")
RUN_DIRS = ("tb",)


class RunDirError(ValueError):
    """The run directory cannot be used: it is a file, holds another run, or another process uses it."""


@dataclass
class RunLock:
    """A held ``.kdforge.lock``; ``notes`` says what the claim did (stale lock taken over, temp files removed)."""

    run_dir: Path
    fd: int | None
    created_dir: bool
    notes: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Remove the lock file and unlock; remove the directory if the claim created it and it is empty."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            (self.run_dir / LOCK_NAME).unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None
        if self.created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only succeeds when empty

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_files(run_dir: Path) -> list[Path]:
    """The files and folders kdforge wrote in ``run_dir`` (what ``--overwrite`` removes)."""
    found: set[Path] = set()
    for pattern in RUN_FILES:
        found.update(p for p in run_dir.glob(pattern) if p.is_file())
    found.update(p for p in (run_dir / d for d in RUN_DIRS) if p.is_dir())
    return sorted(found)


def _listing(paths: list[Path], n: int = 5) -> str:
    names = [p.name for p in paths[:n]]
    return ", ".join(names) + (f", … ({len(paths) - n} more)" if len(paths) > n else "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text()[:4096] or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, object]) -> str:
    pid, host, started = holder.get("pid"), holder.get("host"), holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started))) if isinstance(started, (int, float)) else "?"
    return f"process {pid} on {host or '?'} (started {when})"


def _acquire(run_dir: Path) -> tuple[int, str | None]:
    """Lock ``run_dir/.kdforge.lock``; returns ``(fd, note about a stale lock or None)``."""
    path = run_dir / LOCK_NAME
    for _ in range(10):  # retried when the lock file is replaced between open and flock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        holder = _read_holder(path)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunDirError(f"run directory {run_dir} is in use by {_describe(holder)} (lock file {path}); "
                                  f"wait for that run to finish, stop it, or give this run another directory "
                                  f"(--out DIR / output_dir)") from None
            try:  # the holder may have removed the file while we waited: lock the file that is there now
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
        else:  # pragma: no cover - no flock: trust a live PID on this host
            pid = holder.get("pid")
            if isinstance(pid, int) and holder.get("host") == socket.gethostname() and pid != os.getpid() \
                    and _pid_alive(pid):
                os.close(fd)
                raise RunDirError(f"run directory {run_dir} is in use by {_describe(holder)}; wait for it or "
                                  f"use another directory (--out DIR)")
        note = None
        if holder.get("pid") is not None:
            note = f"took over a stale lock of {_describe(holder)}, which ended without releasing it"
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
        os.fsync(fd)
        return fd, note
    raise RunDirError(f"could not lock {path}: it keeps being replaced by another process")


def claim_run_dir(run_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> RunLock:
    """Check that ``run_dir`` may hold this run, lock it, and clean temp files of interrupted writes.

    ``resume``: the directory continues its own run (files expected). ``overwrite``: the files of an
    earlier run there are deleted first. Neither: the directory must be empty or absent.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume continues the run in the directory and --overwrite deletes it; choose one")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"the run directory {run_dir} is a file; give a directory path (--out DIR / output_dir)")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create the run directory {run_dir}: {e.strerror or e}") from None
    fd, stale = _acquire(run_dir)
    lock = RunLock(run_dir, fd, created)
    try:
        if stale:
            lock.notes.append(stale)
        others = [p for p in sorted(run_dir.iterdir()) if p.name != LOCK_NAME and not _is_tmp(p)]
        if others and overwrite:
            ours = run_files(run_dir)
            for p in ours:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            if ours:
                lock.notes.append(f"--overwrite: removed the earlier run's {_listing(ours)}")
        elif others and not resume:
            raise RunDirError(f"the run directory {run_dir} is not empty ({_listing(others)}): it holds an earlier "
                              f"run. Continue that run with --resume, replace it with --overwrite, or give this run "
                              f"another directory (--out DIR / output_dir / name)")
        tmps = [p for p in run_dir.iterdir() if _is_tmp(p)]
        for p in tmps:
            with contextlib.suppress(OSError):
                p.unlink()
        if tmps:
            lock.notes.append(f"removed {len(tmps)} temporary file(s) of interrupted writes ({_listing(tmps)})")
    except BaseException:
        lock.release()
        raise
    return lock


def _is_tmp(p: Path) -> bool:
    return p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")

