"""K runs of one task as one Lightning fit: :class:`StackedTask` (the task's own steps on the members' networks)
and :class:`StackedData` (the members' data modules as one).

The stack trains through the task's unchanged ``training_step``: the members' batches are one batch of their rows
(:mod:`hsvae.stack.members`), whose loss is the mean over all rows, ``(1/K) sum_i loss_i``; K times it is the sum of
the members' losses, whose gradient in member i's parameters is member i's own gradient, and an elementwise optimiser
(Adam) over the stacked parameters is K independent optimisers. Validation runs the task's ``validation_step`` once
per member, on its own batch, with what the step logs collected per member (``member_metrics``), which
:class:`~hsvae.stack.selection.MemberSelection` selects and stops on. A task stacks when its step is a pure function
of the parameters, the batch and the noise, its network's parameterised parts act row by row, and its batches are
tuples of tensors: nothing here names a task.

Dimension convention: a stacked batch is a tuple of tensors ``(K, B, ...)``; the training step sees ``(K * B, ...)``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import pytorch_lightning as pl
import torch

from hsvae.training.task import ELBOTask

from .members import split_network


class StackedTask(pl.LightningModule):
    """The members' tasks (K instances of one task class, each built as its separate run builds it) as one module.

    Args:
        tasks: the members' tasks; the first one's settings (optimiser, KL warm-up, ...) are every member's.
    """

    def __init__(self, tasks: Sequence[ELBOTask]):
        super().__init__()
        if not tasks:
            raise ValueError("tasks: a stack needs at least one member")
        if len({type(task) for task in tasks}) != 1:
            raise ValueError("tasks: the members of a stack are one task (one class)")
        if tasks[0].scheduler_factory is not None:
            raise ValueError("tasks: a learning-rate scheduler would step on the members' mean, not on each member's "
                             "own metric")
        if tasks[0].net is None:
            raise ValueError(f"tasks: {type(tasks[0]).__name__} builds its network from the data in setup(); a stack "
                             f"stacks networks built in the constructor")
        self.k = len(tasks)
        self.task = copy.deepcopy(tasks[0])
        self.splits = split_network(self.task.net, [task.net for task in tasks])
        self.member_metrics: dict[str, torch.Tensor] | None = None  # (K,) each, after a validation epoch
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's network parameters under its separate network's names (``encoder.net.0.weight``, ...)."""
        return {f"{part}.{name}": value for part, split in self.splits.items()
                for name, value in split.member_state(i).items()}

    @contextmanager
    def only(self, i: int) -> Iterator[None]:
        """The task runs member i alone (its network on its own batch)."""
        with ExitStack() as stack:
            for split in self.splits.values():
                stack.enter_context(split.only(i))
            yield

    # -- the task's own hooks, on the stacked network -------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.task.trainer = self.trainer  # (its epoch, its KL warm-up, its logging)
        self.task.setup(stage)

    def configure_callbacks(self):
        return self.task.configure_callbacks()

    def configure_optimizers(self):
        return self.task.configure_optimizers()

    def _hook(self, name: str, *args):
        self.task._current_fx_name = self._current_fx_name  # its self.log goes where the stack's would
        return getattr(self.task, name)(*args)

    def on_train_epoch_start(self) -> None:
        self._hook("on_train_epoch_start")

    def on_train_epoch_end(self) -> None:
        self._hook("on_train_epoch_end")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        rows = tuple(part.flatten(0, 1) for part in batch)
        return self.k * self._hook("training_step", rows, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._sums, self._counts = {}, {}

    def validation_step(self, batch, batch_idx: int) -> None:
        for i in range(self.k):
            member_batch = tuple(part[i] for part in batch)
            with self.only(i), self._collecting(i, member_batch[0].shape[0]):
                self._hook("validation_step", member_batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self._sums or self.trainer.sanity_checking:
            return
        self.member_metrics = {name: self._sums[name] / self._counts[name] for name in self._sums}
        self.log_dict({name: values.mean() for name, values in self.member_metrics.items()})  # (the members' mean)

    @contextmanager
    def _collecting(self, i: int, batch_size: int) -> Iterator[None]:
        """What the task logs, kept as member i's batch-size-weighted sums (Lightning's epoch means); no host read."""
        def collect(name, value, batch_size=batch_size, **_):
            value = torch.as_tensor(value, device=self.device, dtype=torch.float32).detach()
            if name not in self._sums:
                self._sums[name] = torch.zeros(self.k, device=self.device)
                self._counts[name] = torch.zeros(self.k, device=self.device)
            self._sums[name][i] += value * batch_size
            self._counts[name][i] += batch_size

        def collect_dict(values, batch_size=batch_size, **_):
            for name, value in values.items():
                collect(name, value, batch_size)

        self.task.log, self.task.log_dict = collect, collect_dict  # (instance attributes: the class's return after)
        try:
            yield
        finally:
            del self.task.log, self.task.log_dict


class StackedLoader:
    """K loaders of equally many batches as one: a step's batches stacked, ``(K, B, ...)`` per part."""

    def __init__(self, loaders: Sequence):
        lengths = {len(loader) for loader in loaders}
        if len(lengths) != 1:
            raise ValueError(f"the members' loaders differ in length ({sorted(lengths)} batches): a stack needs "
                             f"members whose splits have the same sizes")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batches in zip(*self.loaders):
            if not all(isinstance(b, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in b) for b in batches):
                raise ValueError(f"a stack takes batches that are tuples of tensors, got {type(batches[0]).__name__}")
            yield tuple(torch.stack(parts) for parts in zip(*batches))


class StackedData(pl.LightningDataModule):
    """The members' data modules (each built as its separate run builds it: its split, its shuffling) as one;
    each member's per-batch transform (MNIST's dynamic binarisation) is its own data module's.

    Args:
        members: the members' data modules.
    """

    def __init__(self, members: Sequence[pl.LightningDataModule]):
        super().__init__()
        if not members:
            raise ValueError("members: a stack needs at least one data module")
        self.members = list(members)

    def setup(self, stage: str | None = None) -> None:
        for member in self.members:
            member.trainer = self.trainer  # (the device, whether it is training)
            member.setup(stage)

    def train_dataloader(self) -> StackedLoader:
        return StackedLoader([m.train_dataloader() for m in self.members])

    def val_dataloader(self) -> StackedLoader:
        return StackedLoader([m.val_dataloader() for m in self.members])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        parts = [m.on_after_batch_transfer(tuple(t[i] for t in batch), dataloader_idx)
                 for i, m in enumerate(self.members)]
        return tuple(torch.stack(column) for column in zip(*parts))
