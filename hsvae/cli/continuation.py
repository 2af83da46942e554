"""What a run does with the folder it is given: start, continue, resume, or refuse.

With ``auto_resume`` (the default) a run whose folder already holds *the same run* continues it: a finished run
is kept as it is (nothing is written), an interrupted one resumes from its ``checkpoints/last.ckpt``, and one that
failed, was interrupted or was skipped before it wrote a checkpoint starts again. So the same command, run again
(a sweep into its sweep folder, a requeued SLURM job, ``python train.py hydra.run.dir=X`` after a Ctrl-C),
finishes what it started. "The same run" is decided on the overrides: the folder's ``.hydra/overrides.yaml``
against this command's, leaving out the keys that say how a run is run, not which run it is
(``hydra.job.config.override_dirname.exclude_keys``: the launcher, the budget, the trainer's device...). A folder
that holds another run is refused (``allow_overwrite=true`` replaces it), never mixed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hsvae.analysis.results import DONE_STATUSES, LOCK_FILE, RESULTS_FORMAT, read_json, read_status
from hsvae.cli.resume import override_key, run_dir_of

log = logging.getLogger(__name__)

#: What marks a directory as some run's: its config, checkpoints or results.
RUN_MARKERS = ("results.json", "checkpoints", ".hydra")


def check_output_dir(output_dir: str | Path, allow_overwrite: bool) -> None:
    """Refuse to write into another run's directory (nothing is written before this check)."""
    output_dir = Path(output_dir)
    found = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if found and not allow_overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a run ({', '.join(found)}): choose another directory (hydra.run.dir=...), "
            "resume that run with ckpt_path=<it>/checkpoints/last.ckpt, or pass allow_overwrite=true to replace it."
        )


def run_identity(overrides: list[str], exclude: list[str]) -> dict[str, str]:
    """``{key: override}`` of the overrides that say which run this is (``exclude`` and ``hydra.*`` left out)."""
    left_out = set(exclude)
    return {override_key(o): o for o in overrides
            if override_key(o) not in left_out and not override_key(o).startswith("hydra.")}


def identity_difference(output_dir: Path) -> str | None:
    """How the run in ``output_dir`` differs from this command's (None: the same run, or nothing to compare)."""
    saved = output_dir / ".hydra" / "overrides.yaml"
    if not HydraConfig.initialized() or not saved.is_file():
        # no overrides to compare (a run that ended before writing its config, an M1 inside its M1+M2 job): ours
        # if its results.json is a record of this project's, or if it has none
        record = output_dir / "results.json"
        if record.exists() and (read_status(output_dir) or {}).get("format") != RESULTS_FORMAT:
            return f"{record} is not a record of this project's"
        return None
    hc = HydraConfig.get()
    exclude = list(hc.job.config.override_dirname.exclude_keys or [])
    try:
        before = run_identity([str(o) for o in (yaml.safe_load(saved.read_text()) or [])], exclude)
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        return f"its {saved} cannot be read"
    now = run_identity(list(hc.overrides.task), exclude)
    if before == now:
        return None
    differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return "; ".join(f"{k}: {before.get(k, '(unset)')} there, {now.get(k, '(unset)')} here" for k in differ)


@dataclass
class FolderPlan:
    """What this run does in its folder: resume from ``checkpoint``, or nothing (``finished``: its metrics)."""

    checkpoint: str | None = None
    finished: dict[str, float] | None = None


def plan_folder(cfg: DictConfig, output_dir: Path) -> FolderPlan:
    """Decide before anything is written; raise ``FileExistsError`` (a usage error) for a folder that holds
    another run."""
    explicit = cfg.get("ckpt_path")
    allow_overwrite = bool(cfg.get("allow_overwrite", False))
    if explicit:
        if run_dir_of(explicit) == output_dir.resolve():  # resumed in place (train.py ckpt_path=<run>/...)
            return FolderPlan(finished=finished_metrics(output_dir)) if finished_metrics(output_dir) else \
                FolderPlan(checkpoint=str(explicit))
        check_output_dir(output_dir, allow_overwrite)
        return FolderPlan(checkpoint=str(explicit))
    found = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if not found or allow_overwrite:
        return FolderPlan()
    if not cfg.get("auto_resume", True):  # only the same run continues in place
        check_output_dir(output_dir, allow_overwrite=False)
    difference = identity_difference(output_dir)
    if difference is not None:
        raise FileExistsError(
            f"{output_dir} already holds a run of other overrides ({difference}): choose another directory "
            "(hydra.run.dir=..., or hydra.sweep.dir=... for a sweep), or pass allow_overwrite=true to replace it.")
    finished = finished_metrics(output_dir)
    if finished is not None:
        return FolderPlan(finished=finished)
    last = output_dir / "checkpoints" / "last.ckpt"
    return FolderPlan(checkpoint=str(last)) if last.is_file() else FolderPlan()


def finished_metrics(output_dir: Path) -> dict[str, float] | None:
    """The metrics of a run that already finished in ``output_dir``, or None if it did not finish there."""
    previous = read_status(output_dir)
    if not previous or previous.get("status", "finished") not in DONE_STATUSES or not previous.get("metrics"):
        return None
    return {k: float(v) for k, v in previous["metrics"].items()}


class FolderInUseError(FileExistsError):
    """Another live process holds the run folder."""


@contextlib.contextmanager
def claim_folder(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir`` for this process: ``.lock`` is created exclusively (an atomic create: of two commands
    started together into one folder exactly one gets it) before anything else is written there, and removed when
    the block ends. A lock left by a dead process of this host is taken over with a warning; a live holder (or one
    on another host, whose life cannot be checked from here) is refused in one line naming it."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_json(lock) or {}
            pid = holder.get("pid")
            stale = holder.get("host") == me["host"] and isinstance(pid, int) and not psutil.pid_exists(pid)
            if not stale and holder:
                raise FolderInUseError(
                    f"{output_dir} is in use by another run (pid {holder.get('pid')} on {holder.get('host')}, since "
                    f"{holder.get('since')}): wait for it to end, or choose another directory (hydra.run.dir=...); "
                    f"if that process is gone, remove {lock}") from None
            log.warning("%s: taking over the lock of %s, which no longer runs", output_dir,
                        f"pid {holder.get('pid')}" if holder else "an unreadable lock file")
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise FolderInUseError(f"{output_dir}: its lock {lock} could not be taken; remove it if no run works there")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if (read_json(lock) or {}).get("pid") == me["pid"]:
                lock.unlink()
