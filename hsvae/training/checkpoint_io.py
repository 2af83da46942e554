"""Checkpoints written next to their final name, then renamed over it.

Lightning's own writer stages a checkpoint in the system's temporary folder and moves it into place; where
that folder is on another file system than the run (a node-local ``/tmp`` and a shared run directory on a
cluster) the move is a copy, and a job killed during it leaves a truncated ``last.ckpt``: the very file a
requeued job resumes from. Here the temporary file is in the checkpoint's own folder, so the rename is atomic
and a crash leaves the previous checkpoint (or none). The file gets the mode ``open()`` would give it, not
``mkstemp``'s 0600.
"""

from __future__ import annotations

import os
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
        with atomic_file(path, "wb") as f:
            torch.save(checkpoint, f)
