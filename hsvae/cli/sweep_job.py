"""What a job knows of the sweep it belongs to (Hydra multirun, an Optuna search): its number, folder and
overrides, as a stack's member would see them, and the GPU a job takes on a machine with several."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict


def sweep_job() -> dict | None:
    """In a Hydra multirun: the job number, the sweep directory and this job's overrides; else None.
    In a hyperparameter search (an Optuna sweeper) also ``study`` (its study name) and ``params`` (this
    trial's values of the parameters in ``hydra.sweeper.params``)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    job = {"num": hc.job.num, "sweep_dir": hc.sweep.dir, "overrides": list(hc.overrides.task),
           "name": hc.job.override_dirname}
    study = hc.sweeper.get("study_name")
    if study:
        searched = {str(k) for k in (hc.sweeper.get("params") or {})} | _searched_on_command_line(hc.sweep.dir)
        pairs = (o.lstrip("+~").partition("=") for o in job["overrides"])
        job["study"] = str(study)
        job["params"] = {key: _scalar(value) for key, _, value in pairs if key in searched}
    return job


def member_overrides(overrides: list[str], seed: int) -> list[str]:
    """A job's overrides as a stack's member's separate job has them: ``seeds=...`` (and any ``seed=``) replaced
    by ``seed=<seed>``."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("seeds", "seed")] + [f"seed={seed}"]


def member_job(seed: int) -> dict | None:
    """:func:`sweep_job` as the separate job of a stack's member would see it: its ``seeds=[...]`` override
    replaced by ``seed=<seed>`` (in the overrides and the job's name)."""
    job = sweep_job()
    if job is None:
        return None
    stacked = [o for o in job["overrides"] if o not in member_overrides(job["overrides"], seed)]
    job["overrides"] = member_overrides(job["overrides"], seed)
    name = job["name"] or ""
    for override in stacked:
        name = name.replace(override, f"seed={seed}" if override.lstrip("+~").startswith("seeds") else "")
    job["name"] = ",".join(part for part in name.split(",") if part) or f"seed={seed}"
    return job


def _searched_on_command_line(sweep_dir: str) -> set[str]:
    """The searched parameters listed in the sweep's search.yaml (hsvae.sweeps.optuna_search writes it before the first
    trial), which include sweeps given on the command line rather than in hydra.sweeper.params."""
    import yaml

    try:
        return set((yaml.safe_load((Path(sweep_dir) / "search.yaml").read_text()) or {}).get("params") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return set()


def _scalar(text: str) -> int | float | str:
    """An override's value as a number where it is one (W&B plots numbers on a numeric axis)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def assign_job_gpu(cfg: DictConfig) -> None:
    """In a multirun on a machine with GPUs, pin job N to GPU N mod (number of GPUs).

    With the joblib launcher running k jobs at once on g GPUs, each job gets its own GPU when k <= g,
    and small runs share GPUs round-robin when k > g. Only for single-device trainers on GPU; a CPU run,
    a DDP run, or an explicit device list is left alone.
    """
    job = sweep_job()
    if job is None or not cfg.get("gpu_per_job", True) or not torch.cuda.is_available():
        return
    trainer = cfg.trainer
    if trainer.get("accelerator") not in ("gpu", "cuda", "auto") or trainer.get("devices") not in (1, "1", None):
        return
    if trainer.get("strategy") not in (None, "auto"):
        return
    with open_dict(trainer):
        trainer.devices = [job["num"] % torch.cuda.device_count()]
