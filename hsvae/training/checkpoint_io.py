"""Checkpoints written next to their final name, then renamed over it.

Lightning's own writer stages a checkpoint in the system's temporary folder and moves it into place; where
that folder is on another file system than the run (a node-local ``/tmp`` and a shared run directory on a
cluster) the move is a copy, and a job killed during it leaves a truncated ``last.ckpt``: the very file a
requeued job resumes from. Here the temporary file is in the checkpoint's own folder, so the rename is atomic
and a crash leaves the previous checkpoint (or none). The file gets the mode ``open()`` would give it, not
``mkstemp``'s 0600.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from hsvae.utils.io import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are a write to a hidden temporary file in the target folder, an fsync
    and an ``os.replace``. Loading and removing are Lightning's."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        try:
            with atomic_file(path, "wb") as f:
                torch.save(checkpoint, f)
        except RuntimeError as err:
            # torch's zip writer reports a failed write as "[enforce fail at inline_container.cc] unexpected pos",
            # the OSError (a full disk, a quota) in its context: say which, naming the file (the previous checkpoint
            # is intact: the write went to a temporary file, removed since)
            cause = _os_error_in(err)
            if cause is not None:
                raise OSError(cause.errno, os.strerror(cause.errno), str(path)) from err
            if disk_is_full(Path(path).parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from err
            raise


def _os_error_in(err: BaseException) -> OSError | None:
    """The first OSError with an errno among an exception's causes and contexts."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def disk_is_full(folder: Path, reserve: int = 1 << 20) -> bool:
    """Whether ``folder``'s file system has less than ``reserve`` bytes left for this user."""
    try:
        return shutil.disk_usage(folder).free < reserve
    except OSError:
        return False
