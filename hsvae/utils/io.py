"""Writing results without ever leaving a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import IO, Any


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask: usually 0o644). ``tempfile.mkstemp`` creates
    its files 0o600 whatever the umask; files renamed from one into place get this mode instead."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", suffix: str = ".tmp") -> Iterator[IO]:
    """Open a hidden temporary file beside ``path`` for writing; when the block ends cleanly, fsync it and rename
    it over ``path``; on any error (Ctrl-C included) remove it. ``path`` is always the previous file (or none)
    or the whole new one, never half of one; the rename is atomic because both names are in one folder. The
    file gets the mode ``open()`` would give it (:func:`new_file_mode`), not ``mkstemp``'s 0o600: results and
    checkpoints are read by others (and their tools)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON (indented, one trailing newline) atomically: see :func:`atomic_file`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text atomically: see :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(text)
