"""``python train.py`` / ``hsvae-train``: train a model from a composed Hydra config, test it, write results.json.

Examples::

    python train.py                                  # S-VAE on the synthetic sphere (the embedded default)
    python train.py latent=gaussian dataset=mnist latent.dim=10
    python train.py ckpt_path=logs/train/runs/<date>/checkpoints/last.ckpt   # resume
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from pytorch_lightning.utilities.rank_zero import rank_zero_only

from hsvae.cli.banner import start_banner
from hsvae.cli.instantiation import instantiate_callbacks, instantiate_model, validate
from hsvae.cli.run_loggers import (continue_history, finish_wandb, instantiate_loggers, log_hyperparameters,
                                   logged_final_metrics)
from hsvae.cli.sweep_job import assign_job_gpu
from hsvae.utils.errors import ConfigError
from hsvae.cli.checkpoints import check_fits, load_checkpoint
from hsvae.cli.evaluators import instantiate_evaluators
from hsvae.cli.resume import run_dir_of
from hsvae.cli.failures import recording_failures
from hsvae.cli.signals import lightning_interruptions, set_phase
from hsvae.cli.stack_runs import finished_stack_metrics, run_stacked, stack_checkpoint, stack_seeds
from hsvae.analysis.results import PROGRESS_FILE
from hsvae.cli.continuation import FolderPlan, claim_folder, plan_folder
from hsvae.cli.records import save_run_config, write_record
from hsvae.cli.report import collect_metrics, print_metrics, write_results
from hsvae.utils.modules import configure_compile
from hsvae.sweeps.budget import budget_refusal
from hsvae.cli.search_trial import objective, trial_pruning
from hsvae.cli.m1 import m1_checkpoint, m1_stage_config
from hsvae.cli.stages import instantiate_datamodule
from hsvae.training.checkpoint_io import AtomicCheckpointIO
from hsvae.training.run_state import RunState
from hsvae.utils.run_info import git_commit

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any] | None:
    """Train and test as the config says; return the metrics written to results.json (None: the run was not
    started, its time budget being too short)."""
    # Argument checks of torch.distributions cost more than a small model's step; they are for tests
    # and debugging (validate_distributions=true), and are restored afterwards.
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(bool(cfg.get("validate_distributions", False)))
    try:
        return _train(cfg)
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def _train(cfg: DictConfig) -> dict[str, Any] | None:
    started, commit = time.time(), git_commit()
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank != 0:
        # a DDP worker that Lightning started by re-running this command into rank zero's directory: rank zero
        # checked and claimed it, and records the run's outcome
        return _fit_and_test(cfg, output_dir, cfg.get("ckpt_path") or None, started, commit)
    # one run per folder: claimed before anything is written there, released when the run ends
    with claim_folder(output_dir):
        return _claimed(cfg, output_dir, started, commit)


def _claimed(cfg: DictConfig, output_dir: Path, started: float, commit: str | None) -> dict[str, Any] | None:
    try:
        seeds = stack_seeds(cfg)  # a stack's seeds (seeds=[...]), or None for an ordinary run
    except ConfigError:  # an invalid list: reported below, with the run's record
        seeds = None
    stack_done = finished_stack_metrics(output_dir, seeds) if seeds is not None else None
    # an interrupted stack of this config continues in its own folder from its last epoch
    stack_resume = stack_checkpoint(cfg, output_dir, seeds) if seeds is not None else None
    if stack_done is not None:
        # every member of this stack finished here: nothing is written (a sweep run again continues the rest)
        print(f"{output_dir}: every member of the stack (seeds {list(cfg.seeds)}) already finished; nothing to do.",
              file=sys.stderr)
        return stack_done
    plan = FolderPlan() if stack_resume is not None else plan_folder(cfg, output_dir)
    if plan.finished is not None:
        # nothing is written: the run's files stay as they are
        print(f"{output_dir} already finished (its results.json): nothing to do.", file=sys.stderr)
        return plan.finished
    ckpt_path = plan.checkpoint
    if ckpt_path is not None and not cfg.get("ckpt_path"):  # auto_resume's checkpoint: its own last.ckpt
        log.info("continuing the interrupted run in %s from %s", output_dir, ckpt_path)
    refusal = budget_refusal(cfg, output_dir, started)
    if refusal is not None:
        # not started: a record says why, and the same command run again (with time left) replaces it by the run
        print(f"{output_dir}: skipped by the time budget: {refusal}.", file=sys.stderr)
        write_record(output_dir, cfg, "skipped", {}, reason=f"time budget: {refusal}", exit_code=0)
        return None
    # from here on the directory is this run's: its config, its log, and a record if it fails
    save_run_config(cfg, output_dir)
    with recording_failures(output_dir, f"{cfg.task_name}.log", cfg):
        set_phase("setting up the run")
        validate(cfg)
        seeds = stack_seeds(cfg)
        if seeds is not None:  # the seeds as one stacked fit, written as one run per seed (no M2: no stages)
            return run_stacked(cfg, output_dir, seeds, started, commit, resume=stack_resume)
        _earlier_stages(cfg)
        return _fit_and_test(cfg, output_dir, ckpt_path, started, commit)


def _earlier_stages(cfg: DictConfig) -> None:
    """The steps a task runs before this run's data exist: an M1+M2 run's M1, trained into ``<output_dir>/m1/``
    as a complete run of its own when no M1 is there yet (``m1.ckpt_path`` null); the data module then loads it
    from its checkpoint (hsvae/cli/stages.py)."""
    if cfg.get("m1") is not None and m1_checkpoint(cfg) is None:
        train(m1_stage_config(cfg))


class PhaseTracker(pl.Callback):
    """Names the phase of a fit or test as Lightning goes through it (for a signal's record)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("starting the fit")

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("checking the validation step")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase(f"training (epoch {trainer.current_epoch})")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            set_phase(f"validating (epoch {trainer.current_epoch})")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("testing")


@dataclass
class _Run:
    """What the build step makes of a config: the objects the fit, the evaluation and the record use."""

    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    trainer: pl.Trainer
    loggers: list
    run_state: RunState
    pruning: pl.Callback | None


def _fit_and_test(cfg: DictConfig, output_dir: Path, ckpt_path: str | None, started: float,
                  commit: str | None) -> dict[str, Any]:
    """The steps of a run whose folder is claimed and whose config is checked: build, fit, evaluate, record."""
    in_place = ckpt_path is not None and run_dir_of(ckpt_path) == output_dir.resolve()  # resumed in its own folder
    validate(cfg)
    assign_job_gpu(cfg)
    if rank_zero_only.rank == 0:
        log.info("%s", start_banner(cfg, ckpt_path))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run = _build(cfg, output_dir, ckpt_path, in_place, started)
    fit_metrics = _fit(cfg, run, ckpt_path, in_place)
    pruned_at = run.pruning.pruned_at if run.pruning is not None else None
    test_ckpt = _evaluate(cfg, run, ckpt_path) if cfg.get("test", True) and pruned_at is None else None
    metrics = collect_metrics(run.trainer, fit_metrics)
    if run.trainer.is_global_zero:
        _record(cfg, output_dir, run, metrics, commit, test_ckpt, pruned_at)
    finish_wandb(run.loggers)
    return metrics


def _build(cfg: DictConfig, output_dir: Path, ckpt_path: str | None, in_place: bool, started: float) -> _Run:
    """The data (after the task's earlier stages), the model (checked against the checkpoint it resumes), the
    callbacks with the task's evaluators, the loggers and the trainer."""
    set_phase("loading the data")
    datamodule = instantiate_datamodule(cfg)
    if rank_zero_only.rank == 0:
        save_run_config(cfg, output_dir)  # again, with what was read from the data (data_spec.input_dim)
    model = instantiate_model(cfg)
    if cfg.get("compile", False):
        configure_compile()
        model.net.compile()  # in place: the parameters' names, and so the checkpoints, stay those of eager runs
    checkpoint = None
    if ckpt_path is not None:
        checkpoint = load_checkpoint(ckpt_path)
        hint = "Resume with the run's own config (drop the overrides that change the model)."
        check_fits(model, checkpoint, ckpt_path, hint)
    callbacks = instantiate_callbacks(cfg.get("callbacks"), cfg.trainer.get("enable_progress_bar", True) is not False)
    # every random state and the time spent go into each checkpoint: a resumed run is the uninterrupted one
    run_state = RunState(output_dir / PROGRESS_FILE if rank_zero_only.rank == 0 else None, started)
    callbacks.extend([run_state, PhaseTracker(), instantiate_evaluators(cfg, datamodule, model)])
    pruning = trial_pruning(cfg)  # a search's trial: reports each epoch, stops when the pruner says so
    if pruning is not None:
        callbacks.append(pruning)
    loggers = instantiate_loggers(cfg.get("logger"), resume_dir=output_dir if in_place else None)
    if in_place:
        continue_history(loggers, checkpoint.get("epoch", -1))
    # checkpoints are renamed into place from their own folder: a job killed mid-save keeps its last.ckpt
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  plugins=[AtomicCheckpointIO()])
    log_hyperparameters(cfg, loggers)
    return _Run(datamodule, model, trainer, loggers, run_state, pruning)


def _fit(cfg: DictConfig, run: _Run, ckpt_path: str | None, in_place: bool) -> dict[str, Any]:
    """Train (from ``ckpt_path`` when resuming); the final epoch's metrics."""
    if cfg.get("train", True):
        with lightning_interruptions(run.trainer):
            run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path)
    fit_metrics = dict(run.trainer.callback_metrics)
    if in_place and not any(key.startswith("train/") for key in fit_metrics):
        # resumed after its fit had ended (interrupted while testing): this attempt trained no epoch, and the final
        # epoch's metrics are those its history kept
        fit_metrics = {**logged_final_metrics(run.loggers), **fit_metrics}
    return fit_metrics


def _evaluate(cfg: DictConfig, run: _Run, ckpt_path: str | None) -> str | None:
    """The test stage (the task's evaluators) on the selected checkpoint; that checkpoint's path."""
    checkpoint_callback = run.trainer.checkpoint_callback
    best = getattr(checkpoint_callback, "best_model_path", "") if checkpoint_callback is not None else ""
    test_ckpt = (best or None) if cfg.get("train", True) else ckpt_path
    # the test's Monte-Carlo draws start from the seed, as in eval.py: the same checkpoint gives the same numbers
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    with lightning_interruptions(run.trainer):
        run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=test_ckpt)
    return test_ckpt


def _record(cfg: DictConfig, output_dir: Path, run: _Run, metrics: dict[str, Any], commit: str | None,
            test_ckpt: str | None, pruned_at: int | None) -> None:
    """results.json (with what a table needs: wall time, epochs, attempts; a pruned trial's status) and the
    metrics printed."""
    set_phase("writing the results")
    pruned = {} if pruned_at is None else {
        "status": "pruned", "reason": f"pruned by the search's pruner after epoch {pruned_at} (trial {cfg.trial})"}
    write_results(output_dir, cfg, metrics, wall_time_s=run.run_state.elapsed_s, commit=commit,
                  extra={"test_checkpoint": test_ckpt, "epochs": run.trainer.current_epoch,
                         "global_step": run.trainer.global_step, "attempts": run.run_state.attempts, **pruned})
    print_metrics(metrics, output_dir)


def run_job(cfg: DictConfig) -> float | list[float] | None:
    """One job of ``train.py`` (hsvae/cli/entry_points.py): train, test, write; return what a search optimises."""
    metrics = train(cfg)
    return objective(cfg, metrics, Path(cfg.paths.output_dir))
