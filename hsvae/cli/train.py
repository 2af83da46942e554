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
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from hsvae.cli import CONFIG_DIR
from hsvae.cli.builders import (
    assign_job_gpu,
    check_output_dir,
    instantiate_callbacks,
    instantiate_loggers,
    log_hyperparameters,
    resume_checkpoint,
    validate,
)
from hsvae.cli.plugins import exit_if_plugin_missing
from hsvae.cli.report import collect_metrics, print_metrics, write_results
from hsvae.cli.search import MissingMetricError
from hsvae.utils.run_info import git_commit

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and test as the config says; return the metrics written to results.json."""
    # Argument checks of torch.distributions cost more than a small model's step; they are for tests
    # and debugging (validate_distributions=true), and are restored afterwards.
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(bool(cfg.get("validate_distributions", False)))
    try:
        return _train(cfg)
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def _train(cfg: DictConfig) -> dict[str, Any]:
    started, commit = time.time(), git_commit()
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resume_checkpoint(cfg, output_dir)
    if ckpt_path is None:
        check_output_dir(output_dir, cfg.get("allow_overwrite", False))
    assign_job_gpu(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.dataset)
    model: pl.LightningModule = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(cfg, loggers)

    if cfg.get("train", True):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    fit_metrics = dict(trainer.callback_metrics)

    test_ckpt = None
    if cfg.get("test", True):
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        if cfg.get("train", True):
            test_ckpt = best or None
        else:
            test_ckpt = ckpt_path
        trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)
    metrics = collect_metrics(trainer, fit_metrics)

    if trainer.is_global_zero:
        write_results(
            output_dir,
            cfg,
            metrics,
            wall_time_s=time.time() - started,
            commit=commit,
            extra={"test_checkpoint": test_ckpt, "epochs": trainer.current_epoch, "global_step": trainer.global_step},
        )
        print_metrics(metrics, output_dir)
    for logger in loggers:
        if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        if cfg.trainer.get("fast_dev_run"):  # no checkpoints, so no best/* metrics: nothing to optimise
            log.warning("optimized_metric=%s is not produced by a fast_dev_run; returning None", name)
            return None
        # a dedicated type: a hyperparameter search stops on it instead of counting a failed trial
        raise MissingMetricError(
            f"optimized_metric={name!r} is not among this run's metrics: {sorted(metrics)}. "
            "Set optimized_metric to one of them."
        )
    return metrics[name]


def main() -> float | None:
    exit_if_plugin_missing()
    result = _hydra_main()
    from hsvae.cli import hydra_callbacks

    if hydra_callbacks.sweep_problem:
        print(f"error: {hydra_callbacks.sweep_problem}", file=sys.stderr)
        raise SystemExit(2)
    return result


if __name__ == "__main__":
    main()
