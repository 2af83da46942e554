"""A run as a trial of a hyperparameter search: what it returns to the sweeper, and its pruning (``trial=<n>``, set
by the search's sweeper, hsvae/sweeps/optuna_search.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from hsvae.analysis.results import read_status
from hsvae.utils.errors import MissingMetricError
from hsvae.training.pruning import TrialPruning

log = logging.getLogger(__name__)

#: an objective that is the run's record, not one of its metrics (a multi-objective search of time and quality)
RECORD_OBJECTIVES = ("wall_time_s",)


def trial_pruning(cfg: DictConfig) -> TrialPruning | None:
    """The callback that reports this trial's epochs to its study, or None (not a trial, or no pruner)."""
    number = cfg.get("trial")
    if number is None or not HydraConfig.initialized():
        return None
    settings = HydraConfig.get().sweeper
    pruner = settings.get("pruner") or {}
    if (pruner.get("name") or "none") == "none":
        return None
    # Optuna is imported by a search's trials only (a plain run needs no `search` extra)
    from hsvae.sweeps.study import run_trial

    warmup = pruner.get("warmup_epochs", "kl")
    warmup = int((cfg.get("model") or {}).get("warmup_epochs", 0) or 0) if warmup == "kl" else int(warmup)
    monitor = cfg.callbacks.model_checkpoint.monitor
    return TrialPruning(run_trial(settings, int(number), cfg.trainer.get("max_epochs")), monitor, warmup)


def objective(cfg: DictConfig, metrics: dict[str, Any] | None, output_dir: Path) -> float | list[float] | None:
    """What the run returns to a search: ``optimized_metric``'s value (a list of values for a list of metrics;
    ``wall_time_s`` is the run's recorded time). :class:`MissingMetricError` names a metric the run lacks."""
    names = cfg.get("optimized_metric")
    if not names or metrics is None:
        return None
    single = isinstance(names, str)
    names = [names] if single else list(names)
    record = read_status(output_dir) or {}
    values = []
    for name in names:
        value = record.get(name) if name in RECORD_OBJECTIVES else metrics.get(name)
        if value is None:
            if cfg.trainer.get("fast_dev_run"):  # no checkpoints, so no best/* metrics: nothing to optimise
                log.warning("optimized_metric=%s is not produced by a fast_dev_run; returning None", name)
                return None
            # a dedicated type: a hyperparameter search stops on it instead of counting a failed trial
            raise MissingMetricError(f"optimized_metric={name!r} is not among this run's metrics: "
                                     f"{sorted(metrics) + list(RECORD_OBJECTIVES)}. Set optimized_metric to one of them.")
        values.append(value)
    return values[0] if single else values
