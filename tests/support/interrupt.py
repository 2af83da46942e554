"""A callback that interrupts training as Ctrl-C would (for the resume tests; added with +callbacks.interrupt=...)."""

from __future__ import annotations

import pytorch_lightning as pl


class InterruptAt(pl.Callback):
    """Raise KeyboardInterrupt at the first training batch of epoch ``epoch`` (after last.ckpt of the epoch before)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise KeyboardInterrupt
