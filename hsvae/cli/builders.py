"""Turn composed configs into Lightning objects, with the checks that must happen before training."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is invalid; raised before anything is trained or written."""


def validate(cfg: DictConfig) -> None:
    """Checks of values that would otherwise fail late or deep inside a library."""
    optimizer = cfg.get("model", {}).get("optimizer") or {}
    lr = optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"model.optimizer.lr must be > 0, got {lr}")
    for key in ("weight_decay",):
        value = optimizer.get(key)
        if value is not None and value < 0:
            raise ConfigError(f"model.optimizer.{key} must be >= 0, got {value}")
    latent = cfg.get("latent")
    if latent is not None and not (isinstance(latent.get("dim"), int) and latent.dim >= 1):
        raise ConfigError(f"latent.dim (the intrinsic latent dimension d) must be an integer >= 1, got {latent.get('dim')!r}")
    dataset = cfg.get("dataset") or {}
    for key in ("batch_size", "eval_batch_size"):
        value = dataset.get(key)
        if value is not None and not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"dataset.{key} must be a positive integer, got {value!r}")
    samples = cfg.get("model", {}).get("eval_samples")
    if samples is not None and not (isinstance(samples, int) and samples >= 0):
        raise ConfigError(f"model.eval_samples (importance samples) must be an integer >= 1 (0 skips it), got {samples!r}")
    max_epochs = cfg.get("trainer", {}).get("max_epochs")
    if max_epochs is not None and max_epochs < -1:
        raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 for no limit), got {max_epochs}")


def check_output_dir(output_dir: str | Path, allow_overwrite: bool) -> None:
    """Never overwrite a finished run's results silently."""
    results = Path(output_dir) / "results.json"
    if results.exists() and not allow_overwrite:
        raise FileExistsError(
            f"{results} already exists: this output directory holds a finished run. Choose another directory "
            "(hydra.run.dir=...), or pass allow_overwrite=true to replace its results."
        )


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    for name, node in (cfg or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            callbacks.append(hydra.utils.instantiate(node))
        elif node is not None:
            log.debug("callback %s has no _target_ (disabled group with leftover settings); skipped", name)
    return callbacks


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def instantiate_loggers(cfg: DictConfig | None) -> list:
    loggers = []
    for name, node in (cfg or {}).items():
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        if node._target_.endswith("WandbLogger"):
            with open_dict(node):
                if node.get("offline") is None:
                    node.offline = not _wandb_has_key()
                if node.offline:
                    os.environ.setdefault("WANDB_MODE", "offline")
                Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node))
    return loggers


def log_hyperparameters(cfg: DictConfig, loggers: list) -> None:
    """Send the resolved config to every logger (W&B shows it as the run config)."""
    if not loggers:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    resolved.pop("hydra", None)
    for logger in loggers:
        logger.log_hyperparams(resolved)
