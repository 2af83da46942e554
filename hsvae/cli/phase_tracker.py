"""The phases of a fit or a test, named for a signal's record (hsvae/cli/signals.py)."""

from __future__ import annotations

import pytorch_lightning as pl

from hsvae.cli.signals import set_phase


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
