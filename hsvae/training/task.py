"""The part every hsvae LightningModule shares: :class:`ELBOTask`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytorch_lightning as pl
import torch
from torch import nn

from hsvae.utils.modules import evaluating

from .epoch_means import EpochMeans
from .finite_guard import FiniteLossGuard


class ELBOTask(pl.LightningModule):
    """Trains ``net`` (a plain ``nn.Module`` whose terms carry the latent's gradient estimator) on an objective
    with a KL term; a subclass writes the steps and the metrics of its kind of model.

    What it owns:

    - the optimiser and the scheduler, from partial constructors (Hydra ``_partial_: true``); the scheduler steps
      after every epoch or after every optimiser step (``scheduler_interval``: a warm-up over steps); a
      ``ReduceLROnPlateau`` steps on :attr:`monitor`;
    - the KL warm-up, :meth:`beta`: the KL weight rises linearly from 0 to ``final_beta`` over ``warmup_epochs``
      (fractional epochs count);
    - the training statistics: :meth:`observe` records a step's loss terms, which are averaged on the device
      over the epoch and logged once as ``train/<name>`` (a ``self.log`` per step costs more than a small
      model's step on a CPU), and the sync-free non-finite-loss check (:class:`FiniteLossGuard`);
    - :meth:`evaluating`: the network in eval mode without autograd, for metrics and plots.

    The constructor's arguments (other than ``net``, ``optimizer`` and ``scheduler``) are saved as
    hyperparameters of the subclass.

    Args:
        net: the network.
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: optional partial LR scheduler constructor.
        warmup_epochs: epochs of the KL warm-up (0: none).
        final_beta: the KL weight after the warm-up (1 for the ELBO).
        scheduler_interval: ``"epoch"`` or ``"step"``: when Lightning steps the scheduler.
    """

    #: the validation metric a ``ReduceLROnPlateau`` scheduler steps on
    monitor: str = "val/elbo"
    #: the last sentence of the non-finite-loss error: what to try
    nonfinite_hint: str = "Lower the learning rate, or check the latent's parameter bounds."

    def __init__(
        self,
        net: nn.Module | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
        scheduler_interval: str = "epoch",
    ):
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step' (when the scheduler steps), "
                             f"got {scheduler_interval!r}")
        if not warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0 (0: no KL warm-up), got {warmup_epochs}")
        if not final_beta >= 0:
            raise ValueError(f"final_beta (the KL weight after the warm-up) must be >= 0, got {final_beta}")
        # the subclass's arguments, as its config names them (its frame: not this constructor's)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"],
                                  frame=inspect.currentframe().f_back)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.warmup_epochs, self.final_beta = warmup_epochs, final_beta
        self._train_stats = EpochMeans()
        self._finite = FiniteLossGuard(self.nonfinite_hint)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [self._finite]  # the non-finite-loss check's places in the loop (see hsvae.training.finite_guard)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": self.scheduler_interval}}

    def beta(self, batch_idx: int = 0) -> float:
        """The KL weight at the current epoch and batch (without a trainer: one batch per epoch)."""
        if self.warmup_epochs <= 0:
            return self.final_beta
        batches = int(self.trainer.num_training_batches) if self._trainer is not None else 1
        progress = (self.current_epoch + batch_idx / max(batches, 1)) / self.warmup_epochs
        return self.final_beta * min(1.0, progress)

    def _evaluate(self, batch, stage: str) -> None:
        """A validation (``stage="val"``) or test batch's metrics, logged under ``<stage>/``."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def evaluating(self) -> AbstractContextManager[nn.Module]:
        """``with self.evaluating() as net:`` the network in eval mode, without autograd; its mode is restored."""
        return evaluating(self.net)

    # -- training statistics ----------------------------------------------------------------------------------
    def observe(self, terms: dict[str, torch.Tensor], batch_idx: int, weight: int = 1,
                extra: dict[str, torch.Tensor] | None = None, **scalars: float) -> None:
        """Record a training step: ``terms`` (scalar tensors, the loss first) are checked for a non-finite loss
        and, with ``extra`` statistics, averaged over the epoch (weighted by ``weight``, e.g. the batch size);
        ``scalars``: host numbers the non-finite message names (the KL weight, ...). No host read."""
        self._finite.observe(terms, self.global_step, self.current_epoch, batch_idx, **scalars)
        self._train_stats.add({**terms, **(extra or {})}, weight=weight)

    def epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        """The ``train/`` metrics logged at the end of an epoch from the means of :meth:`observe`'s statistics
        (by default the means themselves; a subclass adds derived ones)."""
        return dict(means)

    def on_train_epoch_start(self) -> None:
        self._train_stats.reset()

    def on_train_epoch_end(self) -> None:
        means = self._train_stats.means()
        if means:
            self.log_dict({f"train/{k}": v for k, v in self.epoch_metrics(means).items()}, sync_dist=True)
