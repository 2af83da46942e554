"""The test stage's driver: :class:`EvaluatorsCallback` runs a run's evaluators (``conf/evaluation``, the metric
families of :mod:`hsvae.evaluation`) around the module's own test loop and logs what they return."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl

from hsvae.evaluation.evaluator import Evaluator


class EvaluatorsCallback(pl.Callback):
    """Runs ``evaluators`` (config key -> evaluator) in the trainer's loops, in the order given:

    - here, once: each checks that ``datamodule`` and ``module`` (what the trainer will run them on) offer what
      it reads (:meth:`Evaluator.check`: an :class:`~hsvae.evaluation.EvaluationError` naming its key);
    - at setup (before fit or test, the data loaded): each sees the data (:meth:`Evaluator.setup`);
    - after each test step: per-batch metrics, averaged over the epoch by batch size (the draws of an evaluator
      here follow the step's own, batch by batch);
    - at the end of the test epoch (and of each validation epoch, sanity check aside): metrics of the split.

    Everything is logged with the module's ``log``, so it reaches ``trainer.callback_metrics``, the loggers and
    results.json under the evaluator's names (``test/log_likelihood``, ...).
    """

    def __init__(self, evaluators: Mapping[str, Evaluator], datamodule: pl.LightningDataModule,
                 module: pl.LightningModule):
        self.evaluators = dict(evaluators)
        for name, evaluator in self.evaluators.items():
            evaluator.check(name, datamodule, module)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for evaluator in self.evaluators.values():
            evaluator.setup(trainer.datamodule)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for evaluator in self.evaluators.values():
            evaluator.test_start(trainer, pl_module)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        for evaluator in self.evaluators.values():
            measured = evaluator.test_batch(trainer, pl_module, batch, batch_idx)
            if measured is not None:
                metrics, batch_size = measured
                pl_module.log_dict(metrics, batch_size=batch_size, sync_dist=True)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_each(pl_module, lambda evaluator: evaluator.test_end(trainer, pl_module))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log_each(pl_module, lambda evaluator: evaluator.validation_end(trainer, pl_module))

    def _log_each(self, pl_module: pl.LightningModule, metrics_of: Callable[[Evaluator], Mapping]) -> None:
        for evaluator in self.evaluators.values():
            metrics = metrics_of(evaluator)
            if metrics:
                pl_module.log_dict(metrics, sync_dist=True)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._teardown()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._teardown()

    def _teardown(self) -> None:
        for evaluator in self.evaluators.values():
            evaluator.teardown()
