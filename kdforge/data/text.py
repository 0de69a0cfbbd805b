"""Text corpora as fixed-length token windows for language modelling, with a built-in byte tokenizer.

The default corpus is one that every machine with Python has offline: the ``.py`` files of the
CPython standard library (``sysconfig.get_paths()["stdlib"]``, without ``site-packages``). Any other
directory of text files works the same way (``root=``, ``pattern=``).

Split by file, deterministically: a file goes to the validation split when the SHA-1 of its path
relative to the root, read as a number in [0, 1), is below ``val_fraction`` — the same file is always
on the same side, whatever the machine, the seed or the other files. Files are then taken in that
hash order (so a byte budget samples the whole library rather than its first packages) and
concatenated, each followed by the separator byte 0 (which does not occur in source code); the
stream is cut into non-overlapping windows of ``seq_len`` tokens. Items are dicts of ``input_ids``,
``attention_mask`` (all ones: windows are full) and ``labels`` (= ``input_ids``, Hugging Face's
unshifted causal-LM convention), so the default collate gives Hugging Face–style batches.

Note: the corpus differs between Python versions (the standard library changes), so numbers measured
on it are comparable only on the same Python version.
"""
from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

SEPARATOR = 0  # byte between documents


class ByteTokenizer:
    """Bytes as tokens: ``vocab_size = 256``, no unknown tokens, exactly one token per byte (so bits per
    token are bits per byte)."""

    vocab_size = 256

    def encode(self, text: str | bytes) -> list[int]:
        return list(text.encode("utf-8") if isinstance(text, str) else text)

    def decode(self, ids: Any) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def stdlib_root() -> Path:
    """The CPython standard library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_files(root: str | Path | None = None, pattern: str = "*.py") -> tuple[Path, list[str]]:
    """``(root, sorted relative posix paths)`` of the files matching ``pattern`` under ``root`` (default:
    the standard library), skipping ``site-packages``/``dist-packages`` and ``__pycache__``."""
    base = Path(root).expanduser() if root is not None else stdlib_root()
    if not base.is_dir():
        raise FileNotFoundError(f"text corpus root {str(base)!r} is not a directory; set data.root to a directory of "
                                f"text files (or leave it empty for the Python standard library)")
    skip = {"site-packages", "dist-packages", "__pycache__"}
    files = sorted(p.relative_to(base).as_posix() for p in base.rglob(pattern)
                   if p.is_file() and not skip.intersection(p.relative_to(base).parts))
    if not files:
        raise FileNotFoundError(f"no files matching {pattern!r} under {str(base)!r}")
    return base, files


def file_hash(rel: str) -> float:
    """A file's position in [0, 1) from the SHA-1 of its relative path (split and order key)."""
    return int.from_bytes(hashlib.sha1(rel.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_files(files: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """``(train, validation)`` file lists, each in hash order (see the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(files, key=file_hash)
    return [f for f in ordered if file_hash(f) >= val_fraction], [f for f in ordered if file_hash(f) < val_fraction]


def read_stream(root: Path, files: list[str], max_bytes: int | None) -> tuple[torch.Tensor, int]:
    """``(the files' bytes, each followed by the separator, as a uint8 tensor cut at max_bytes; files read)``."""
    chunks, total = [], 0
    for rel in files:
        data = (root / rel).read_bytes() + bytes([SEPARATOR])
        if max_bytes is not None and total + len(data) > max_bytes:
            data = data[: max_bytes - total]
        chunks.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).clone(), len(chunks)


class TextWindows(Dataset):
    """Non-overlapping windows of ``seq_len`` tokens over a token stream (see the module docstring)."""

    def __init__(self, tokens: torch.Tensor, files: int = 0, *, seq_len: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 (one input and one target), got {seq_len}")
        n = len(tokens) // seq_len
        if n == 0:
            raise ValueError(f"the text ({len(tokens)} tokens) is shorter than one window of seq_len={seq_len}")
        self.windows = tokens[: n * seq_len].view(n, seq_len)
        self.seq_len, self.n_files, self.n_tokens = seq_len, files, n * seq_len

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.windows[i].long()
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def __getitems__(self, idx: list[int]) -> list[dict[str, torch.Tensor]]:
        """Batched fetch (one gather for the whole batch; the DataLoader's fast path)."""
        ids = self.windows[torch.as_tensor(idx, dtype=torch.long)].long()
        ones = torch.ones_like(ids)
        return [{"input_ids": r, "attention_mask": m, "labels": r.clone()} for r, m in zip(ids, ones)]


def text_splits(root: str | Path | None = None, pattern: str = "*.py", seq_len: int = 128, val_fraction: float = 0.1,
                max_train_bytes: int | None = None, max_val_bytes: int | None = None) -> tuple[TextWindows, TextWindows]:
    """``(train, validation)`` :class:`TextWindows` of a byte-tokenized corpus split by file."""
    base, files = list_files(root, pattern)
    train_files, val_files = split_files(files, val_fraction)
    if not val_files or not train_files:
        raise ValueError(f"val_fraction={val_fraction} leaves an empty split of the {len(files)} files under {base}")
    return (TextWindows(*read_stream(base, train_files, max_train_bytes), seq_len=seq_len),
            TextWindows(*read_stream(base, val_files, max_val_bytes), seq_len=seq_len))


__all__ = ["ByteTokenizer", "SEPARATOR", "TextWindows", "file_hash", "list_files", "read_stream", "split_files",
           "stdlib_root", "text_splits"]
