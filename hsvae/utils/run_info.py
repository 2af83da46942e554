"""Provenance of a run: git commit, hardware, versions."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

#: the folders where runs write their own records (a campaign's runs/ lies in experiments/): not a change of the code
RUN_OUTPUTS = ("experiments", "logs")


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the source tree (with ``-dirty`` when it has uncommitted changes or untracked files outside
    :data:`RUN_OUTPUTS`, where a campaign's own records appear as it runs), or None."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        spec = [":(top)", *(f":(top,exclude){folder}" for folder in RUN_OUTPUTS)]
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *spec], cwd=cwd, capture_output=True, text=True,
                               timeout=5)
        if dirty.returncode != 0:  # a git too old for the pathspec: say so rather than call the tree clean
            return sha.stdout.strip() + "-unknown"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict:
    """CPU, core count, GPU (if any) and library versions."""
    import torch  # here: a failure's record is written on the light path, which may not have imported torch yet

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": None,
    }
    if torch.cuda.is_available():
        info["cuda"] = {
            "device_count": torch.cuda.device_count(),
            "device_name": torch.cuda.get_device_name(0),
            "version": torch.version.cuda,
        }
    return info
