"""A hyperparameter search's pruning, on the run's side: report each epoch to the trial, stop when told to."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl


class TrialPruning(pl.Callback):
    """After each validation: report ``monitor`` to the trial, and from epoch ``warmup_epochs`` on (the KL warm-up
    makes earlier epochs misleading) stop the fit when the search's pruner says this trial is hopeless. The epoch's
    checkpoint is still written; ``pruned_at`` says where it stopped (the run then records ``status: pruned``).
    ``trial``: the search's trial that the run is, with ``report(value, epoch)``, ``should_prune()`` and
    ``mark_pruned(epoch)`` (hsvae/sweeps/study.py gives one backed by the search's study)."""

    def __init__(self, trial: Any, monitor: str, warmup_epochs: int = 0):
        self.trial = trial
        self.monitor = monitor
        self.warmup_epochs = int(warmup_epochs)
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])  # one host read an epoch, at its end
        epoch = trainer.current_epoch
        if not math.isfinite(value):
            return  # the finite-loss guard ends a diverged run; the pruner compares numbers
        self.trial.report(value, epoch)
        if epoch + 1 >= self.warmup_epochs and self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.mark_pruned(epoch)
            trainer.should_stop = True
