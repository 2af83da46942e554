"""A run's loggers from the ``logger`` group: W&B named, grouped and tagged by the sweep job, a resumed run's
history continued, the resolved config sent to each."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger

from hsvae.cli.instantiation import targets
from hsvae.cli.sweep_job import member_job, sweep_job
from hsvae.training.loggers import CSVLogger

log = logging.getLogger(__name__)


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_run_id(output_dir: Path) -> str | None:
    """The id of the W&B run written under ``output_dir/wandb`` (online ``run-<time>-<id>`` or offline
    ``offline-run-<time>-<id>`` folders; the newest), or None."""
    runs = sorted((output_dir / "wandb").glob("*run-*-*"), key=lambda p: p.name.rsplit("run-", 1)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def instantiate_loggers(cfg: DictConfig | None, resume_dir: Path | None = None, seed: int | None = None) -> list:
    """Instantiate the ``logger`` group. W&B: offline without a key; in a multirun, every job of the sweep
    goes into one group named after the task (a search: its study) and the sweep directory, tagged with its
    swept values (a search: its trial's parameters, and the rest of its overrides). ``resume_dir``: the run
    being resumed in place, whose W&B run is continued (same id). ``seed``: the loggers of a stack's member
    (``seeds=[...]``), named and tagged as the separate job with ``seed=<seed>`` would be."""
    loggers = []
    job = sweep_job() if seed is None else member_job(seed)
    for name, node in (cfg or {}).items():
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        if targets(node, WandbLogger):
            with open_dict(node):
                if node.get("offline") is None:
                    node.offline = not _wandb_has_key()
                if node.offline:
                    os.environ.setdefault("WANDB_MODE", "offline")
                if job is not None:
                    prefix = job.get("study") or node.get("group") or "sweep"
                    node.group = f"{prefix}-{Path(job['sweep_dir']).name}"
                    node.tags = [*(node.get("tags") or []), *job["overrides"]][:64]
                    node.name = node.get("name") or job["name"] or f"job{job['num']}"
                run_id = wandb_run_id(resume_dir) if resume_dir is not None else None
                if run_id is not None:
                    node.id, node.resume = run_id, "allow"
                Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node))
    return loggers


def continue_history(loggers: list, until_epoch: int) -> None:
    """A run resumed in place keeps its metric history: the CSV rows of the epochs its checkpoint covers.
    (TensorBoard appends a new event file to the same folder; W&B continues the same run id.)"""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            kept = logger.continue_history(until_epoch)
            log.info("resume: kept %d rows of %s (epochs <= %d)", kept, Path(logger.log_dir) / "metrics.csv",
                     until_epoch)


def logged_final_metrics(loggers: list) -> dict[str, float]:
    """The final epoch's metrics as a resumed run's CSV history kept them (empty without a CSV logger)."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            return logger.final_epoch_metrics()
    return {}


def finish_wandb(loggers: list) -> None:
    """End the W&B run of a run with a W&B logger (only then imported: its import costs a second)."""
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def log_hyperparameters(cfg: DictConfig, loggers: list) -> None:
    """Send the resolved config to every logger (W&B shows it as the run config)."""
    if not loggers:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    resolved.pop("hydra", None)
    job = sweep_job()
    if job is not None and "study" in job:
        # a search's trial: its sampled values side by side as scalars (a list-valued parameter such as
        # model.net.encoder.hidden is a string here), for W&B's parallel-coordinates view
        trial = cfg.get("trial")  # the study's trial number (set by the sweeper); the job's number otherwise
        resolved["search"] = {"study": job["study"], "trial": job["num"] if trial is None else int(trial),
                              "params": job["params"]}
    for logger in loggers:
        logger.log_hyperparams(resolved)
