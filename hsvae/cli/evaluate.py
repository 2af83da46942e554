"""``python eval.py ckpt_path=...`` / ``hsvae-eval``: test a checkpoint with the training run's evaluators (or
those of ``evaluation=[...]``), and write results.json in a new output directory.

The model, data and evaluators are rebuilt from the training run's config (``<run dir>/.hydra/config.yaml``, the
run dir being the checkpoint folder's parent), or from ``train_config=<path to a config.yaml>``. A run written
before ``conf/evaluation`` existed has its evaluators in its model's config: they are read from there
(:func:`hsvae.cli.evaluators.adopt_legacy_evaluation`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from hsvae.cli.banner import start_banner
from hsvae.cli.continuation import check_output_dir, claim_folder
from hsvae.cli.instantiation import instantiate_model, validate
from hsvae.cli.records import save_run_config
from hsvae.cli.run_loggers import instantiate_loggers
from hsvae.cli.checkpoints import find_run_config, load_checkpoint
from hsvae.cli.evaluators import adopt_legacy_evaluation, instantiate_evaluators
from hsvae.cli.failures import recording_failures
from hsvae.cli.m1 import m1_checkpoint
from hsvae.cli.report import collect_metrics, print_metrics, write_results
from hsvae.cli.resume import run_dir_of
from hsvae.cli.signals import lightning_interruptions
from hsvae.cli.stages import instantiate_datamodule
from hsvae.utils.run_info import git_commit
from hsvae.utils.errors import ConfigError

log = logging.getLogger(__name__)


def training_config(cfg: DictConfig) -> DictConfig:
    """The training run's config, with this evaluation's paths, trainer, seed and evaluators (``evaluation``, when
    chosen; else the run's own)."""
    ckpt = Path(cfg.ckpt_path)
    load_checkpoint(ckpt)  # a missing or foreign file is named before its run's config is looked for
    train_cfg, _ = find_run_config(ckpt, cfg.get("train_config"))
    with open_dict(train_cfg):
        if train_cfg.get("m1") is not None and not train_cfg.m1.get("ckpt_path"):
            # an M1+M2 run that trained its M1 into <its run dir>/m1: evaluated with that M1
            train_cfg.paths.output_dir = str(run_dir_of(ckpt))
            trained = m1_checkpoint(train_cfg)
            train_cfg.m1.ckpt_path = None if trained is None else str(trained)
        # This evaluation's own output directory and trainer; the model, data (and by default seed) as trained.
        train_cfg.paths = cfg.paths
        train_cfg.trainer = cfg.trainer
        if cfg.get("seed") is not None:
            train_cfg.seed = cfg.seed
        train_cfg.task_name = cfg.task_name
        adopt_legacy_evaluation(train_cfg)
        if cfg.get("evaluation") is not None:
            train_cfg.evaluation = cfg.evaluation
    return train_cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("eval.py needs the checkpoint to test: ckpt_path=<run dir>/checkpoints/best.ckpt "
                          "(a checkpoint written by train.py)")
    started, commit = time.time(), git_commit()
    output_dir = Path(cfg.paths.output_dir)
    with claim_folder(output_dir):
        check_output_dir(output_dir, cfg.get("allow_overwrite", False))
        save_run_config(cfg, output_dir)
        with recording_failures(output_dir, f"{cfg.task_name}.log", cfg):
            return _evaluate(cfg, output_dir, started, commit)


def _evaluate(cfg: DictConfig, output_dir: Path, started: float, commit: str | None) -> dict[str, Any]:
    train_cfg = training_config(cfg)
    validate(train_cfg)
    log.info("%s", start_banner(train_cfg, str(cfg.ckpt_path)))
    pl.seed_everything(train_cfg.seed, workers=True, verbose=False)
    datamodule = instantiate_datamodule(train_cfg)
    model = instantiate_model(train_cfg)
    evaluation = instantiate_evaluators(train_cfg, datamodule, model)
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False, callbacks=[evaluation])
    # as train.py does before its test stage: the same seed gives the same Monte-Carlo draws, so the same numbers
    pl.seed_everything(train_cfg.seed, workers=True, verbose=False)
    with lightning_interruptions(trainer):
        trainer.test(model, datamodule=datamodule, ckpt_path=str(cfg.ckpt_path))
    metrics = collect_metrics(trainer, {})
    if trainer.is_global_zero:
        write_results(
            output_dir, train_cfg, metrics, wall_time_s=time.time() - started, extra={"checkpoint": str(cfg.ckpt_path)},
            commit=commit,
        )
        print_metrics(metrics, output_dir)
    return metrics
