"""Optimiser construction and the KL warm-up schedule shared by the Lightning modules."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch


def build_optimizers(
    parameters,
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable | None,
    monitor: str,
):
    """``configure_optimizers``' return value from partial constructors (Hydra ``_partial_: true``).

    A scheduler such as ``ReduceLROnPlateau`` is stepped on ``monitor`` (a logged validation metric).
    """
    optimizer = optimizer_factory(params=parameters)
    if scheduler_factory is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler_factory(optimizer=optimizer), "monitor": monitor}}


def linear_warmup(final: float, warmup_epochs: float, module: pl.LightningModule, batch_idx: int) -> float:
    """The KL weight at ``module``'s current epoch and batch: rises linearly from 0 to ``final`` over
    ``warmup_epochs`` (fractional epochs count; without a trainer, one batch per epoch)."""
    if warmup_epochs <= 0:
        return final
    batches = int(module.trainer.num_training_batches) if module._trainer is not None else 1
    progress = (module.current_epoch + batch_idx / max(batches, 1)) / warmup_epochs
    return final * min(1.0, progress)
