"""K runs of one task as one Lightning fit: :class:`StackedTask` (the task's own steps on the members' networks)
and :class:`StackedData` (the members' data modules as one); why the joined loss trains each member as its own run:
docs/ARCHITECTURE.md, "The stack". Nothing here names a task.

Dimension convention: a stacked batch is the list of the members' K batches; the training step sees them joined,
``(K * B, ...)`` per tensor, and its loss is the members' mean, ``(1/K) sum_i loss_i``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from hsvae.training.task import ELBOTask

from .members import split_network


class StackedTask(pl.LightningModule):
    """The members' tasks (K instances of one task class, each built as its separate run builds it) as one module;
    the first one's settings (optimiser, KL warm-up, ...) are every member's."""

    def __init__(self, tasks: Sequence[ELBOTask]):
        super().__init__()
        if not tasks:
            raise ValueError("tasks: a stack needs at least one member")
        if len({type(task) for task in tasks}) != 1:
            raise ValueError("tasks: the members of a stack are one task (one class)")
        kind = getattr(tasks[0].scheduler_factory, "func", tasks[0].scheduler_factory)  # (a partial's class)
        if kind is not None and not (isinstance(kind, type) and issubclass(kind, LRScheduler)):
            raise ValueError(f"tasks: the scheduler {kind!r} is no torch.optim.lr_scheduler class, whose members' "
                             f"rates a stack knows: use one, or run the seeds separately")
        self.plateau = isinstance(kind, type) and issubclass(kind, ReduceLROnPlateau)
        self.lr_factors = [1.0] * len(tasks)  # member i's rate: lr_factors[i] times the optimiser's
        self._plateaus: list[ReduceLROnPlateau] = []
        self._plateau_states: list | None = None
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
        data = self.trainer.datamodule
        for member in data.members if isinstance(data, StackedData) else [data]:  # (its checks of its data)
            self.task.trainer = _MemberTrainer(self.trainer, member)
            self.task.setup(stage)
        self.task.trainer = self.trainer  # (its epoch, its KL warm-up, its logging)

    def configure_callbacks(self):
        return self.task.configure_callbacks()

    def configure_optimizers(self):
        config = self.task.configure_optimizers()
        if not self.plateau:
            return config  # (a schedule that reads no metric is every member's)
        # each member's own copy of the run's ReduceLROnPlateau, on a stand-in optimiser at the run's rate, stepped
        # on its own metric; the stack's optimiser keeps the run's rate (see optimizer_step)
        optimizer = config["optimizer"]
        self._base_lr = optimizer.param_groups[0]["lr"]
        self._plateaus = [self.task.scheduler_factory(optimizer=torch.optim.SGD([torch.zeros(1)], lr=self._base_lr))
                          for _ in range(self.k)]
        for plateau, (state, lr) in zip(self._plateaus, self._plateau_states or ()):  # (a resumed stack)
            plateau.load_state_dict(state)
            plateau.optimizer.param_groups[0]["lr"] = lr
        self._factors_from_plateaus()
        return optimizer

    def _factors_from_plateaus(self) -> None:
        self.lr_factors = [p.optimizer.param_groups[0]["lr"] / self._base_lr for p in self._plateaus]

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The optimiser's step, member i's slice of it scaled by ``lr_factors[i]``: the step of Adam (AdamW, SGD)
        is linear in the rate, and its moments do not depend on it, so member i follows its own rate exactly."""
        if all(f == 1.0 for f in self.lr_factors):
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        params = [p for split in self.splits.values() for p in split.parameters()]
        before = [p.detach().clone() for p in params]
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        factors = torch.tensor(self.lr_factors, device=self.device)
        with torch.no_grad():
            for p, start in zip(params, before):
                p.copy_(torch.lerp(start, p, factors.view(-1, *[1] * (p.dim() - 1)).to(p.dtype)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["member_plateaus"] = [(p.state_dict(), p.optimizer.param_groups[0]["lr"]) for p in self._plateaus]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._plateau_states = checkpoint.get("member_plateaus")  # (restored before configure_optimizers)

    def _hook(self, name: str, *args):
        self.task._current_fx_name = self._current_fx_name  # its self.log goes where the stack's would
        return getattr(self.task, name)(*args)

    def on_train_epoch_start(self) -> None:
        self._hook("on_train_epoch_start")

    def on_train_epoch_end(self) -> None:
        self._hook("on_train_epoch_end")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.k * self._hook("training_step", join_batches(batch), batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._sums, self._counts = {}, {}

    def validation_step(self, batch, batch_idx: int) -> None:
        for i, member_batch in enumerate(batch):
            size = len(member_batch[0]) if isinstance(member_batch, (tuple, list)) else 1
            with self.only(i), self._collecting(i, size):
                self._hook("validation_step", member_batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        if not self._sums or self.trainer.sanity_checking:
            return
        self.member_metrics = {name: self._sums[name] / self._counts[name] for name in self._sums}
        self.log_dict({name: values.mean() for name, values in self.member_metrics.items()})  # (the members' mean)
        if self._plateaus:
            for plateau, value in zip(self._plateaus, self.member_metrics[self.task.monitor].tolist()):
                plateau.step(value)
            self._factors_from_plateaus()

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


class _MemberTrainer:
    """The trainer as a member's task sees it in its setup: with the member's data module as its ``datamodule``."""

    def __init__(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule):
        self._trainer, self.datamodule = trainer, datamodule

    def __getattr__(self, name: str):
        return getattr(self._trainer, name)


def join_batches(batches: Sequence):
    """The members' batches as one: tuples of tensors as their rows (``(K * B, ...)`` per part), anything else by
    its type's ``join`` (a graph's: the members' graphs as one block-diagonal graph)."""
    if all(isinstance(b, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in b) for b in batches):
        return tuple(torch.cat(parts) for parts in zip(*batches))
    join = getattr(type(batches[0]), "join", None)
    if join is None:
        raise ValueError(f"a stack joins batches that are tuples of tensors or have a join(batches) method, got "
                         f"{type(batches[0]).__name__}")
    return join(batches)


class StackedLoader:
    """K loaders of equally many batches as one: a step's batches, as the list of the members'."""

    def __init__(self, loaders: Sequence):
        lengths = {len(loader) for loader in loaders}
        if len(lengths) != 1:
            raise ValueError(f"the members' loaders differ in length ({sorted(lengths)} batches): a stack needs "
                             f"members whose splits have the same sizes")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self) -> Iterator[list]:
        yield from map(list, zip(*self.loaders))


class StackedData(pl.LightningDataModule):
    """The members' data modules (each built as its separate run builds it: its split, its shuffling) as one;
    each member's per-batch transform (MNIST's dynamic binarisation) is its own data module's."""

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
        return [m.on_after_batch_transfer(b, dataloader_idx) for m, b in zip(self.members, batch)]
