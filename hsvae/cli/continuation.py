"""A run that continues in its own folder: a sweep run again into its sweep folder, a requeued SLURM job.

With ``auto_resume`` (on by default in a multirun's jobs, and under ``launcher=slurm``) a job whose folder
already holds its run does what finishes the sweep: a finished run is kept as it is (nothing is written), an
interrupted one resumes from its ``checkpoints/last.ckpt``, and one that failed or was skipped before it wrote a
checkpoint starts again. The folder must hold *this* run: the job's overrides are compared with the ones the
folder's run was started with (``.hydra/overrides.yaml``), leaving out the keys that say how a sweep runs, not
which run it is (``hydra.job.config.override_dirname.exclude_keys``: the launcher, the budget, the trainer's
device...). A sweep continued with other parameters is refused instead of mixing two runs in one folder.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hsvae.analysis.results import read_status
from hsvae.cli.builders import ConfigError


def continues_in_place(cfg: DictConfig) -> bool:
    """Whether this run continues what its folder holds: ``auto_resume``, whose default (null) is on in a
    multirun's jobs and off in a single run (which refuses another run's folder)."""
    value = cfg.get("auto_resume")
    if value is None:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return bool(value)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def run_identity(overrides: list[str], exclude: list[str]) -> dict[str, str]:
    """``{key: override}`` of the overrides that say which run this is (``exclude`` and ``hydra.*`` left out)."""
    left_out = set(exclude)
    return {_key(o): o for o in overrides if _key(o) not in left_out and not _key(o).startswith("hydra.")}


def check_same_run(output_dir: Path) -> None:
    """Refuse to continue a folder whose run was started with other overrides than this job's."""
    saved = output_dir / ".hydra" / "overrides.yaml"
    if not HydraConfig.initialized() or not saved.is_file():
        return
    hc = HydraConfig.get()
    exclude = list(hc.job.config.override_dirname.exclude_keys or [])
    try:
        before = run_identity([str(o) for o in (yaml.safe_load(saved.read_text()) or [])], exclude)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{saved} cannot be read ({err}): this folder's run is unknown; remove the folder or "
                          "choose another hydra.sweep.dir") from None
    now = run_identity(list(hc.overrides.task), exclude)
    if before != now:
        differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        shown = "; ".join(f"{k}: {before.get(k, '(unset)')} there, {now.get(k, '(unset)')} here" for k in differ)
        raise ConfigError(
            f"{output_dir} holds another run than this job's ({shown}): a sweep continues into its folder with the "
            "same parameters; choose another hydra.sweep.dir (or hydra.run.dir) for a different sweep")


def finished_metrics(output_dir: Path) -> dict[str, float] | None:
    """The metrics of a run that already finished in ``output_dir``, or None if it did not finish there."""
    previous = read_status(output_dir)
    if not previous or previous.get("status", "finished") != "finished" or not previous.get("metrics"):
        return None
    return {k: float(v) for k, v in previous["metrics"].items()}


def holds_unfinished_record(output_dir: Path) -> bool:
    """Whether ``output_dir``'s run ended without finishing (failed, interrupted, skipped) or without a record:
    a continued sweep may start it again."""
    return finished_metrics(output_dir) is None
