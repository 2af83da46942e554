"""Learning-rate schedules in a stack (issue 25): a schedule that reads no metric (the latent comparison's warm-up)
is every member's; a ReduceLROnPlateau is each member's own, on its own metric, its rate applied to its own slice of
each update (exactly: Adam's step is linear in the rate)."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LinearLR, ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from hsvae.stack import StackedData, StackedTask
from hsvae.training import VAEModule
from tests.test_stack import PIXELS, _task

K, ROWS, BATCH = 2, 32, 8


class _Data(pl.LightningDataModule):
    """A member's data: binary images, and labels all equal to ``label``."""

    def __init__(self, seed: int, label: float = 0.0):
        super().__init__()
        self.x = torch.bernoulli(torch.rand(ROWS, PIXELS, generator=torch.Generator().manual_seed(seed)))
        self.y = torch.full((ROWS,), label)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=BATCH)

    val_dataloader = train_dataloader


class _Rates(pl.Callback):
    """Each member's rate before every optimiser step, and after every epoch."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def on_train_batch_start(self, trainer, stack, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps.append([lr * f for f in stack.lr_factors])

    def on_train_epoch_end(self, trainer, stack):
        self.epochs.append(list(stack.lr_factors))


def _fit(stack: StackedTask, data: list[pl.LightningDataModule], epochs: int) -> _Rates:
    rates = _Rates()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[rates])
    trainer.fit(stack, datamodule=StackedData(data))
    return rates


def _with_scheduler(task: VAEModule, scheduler, interval: str = "epoch", cls=VAEModule) -> VAEModule:
    return cls(task.net, task.optimizer_factory, scheduler=scheduler, scheduler_interval=interval)


def test_a_warm_up_schedule_is_every_members():
    """The latent comparison's warm-up (LinearLR stepped every optimiser step): every member's rate at every step is
    the schedule's, and the members train."""
    warm_up = functools.partial(LinearLR, start_factor=0.1, end_factor=1.0, total_iters=5)
    tasks = [_with_scheduler(_task("gaussian", seed), warm_up, "step") for seed in range(K)]
    before = [task.net.encoder.net[0].weight.detach().clone() for task in tasks]
    stack = StackedTask(tasks)
    rates = _fit(stack, [_Data(seed) for seed in range(K)], epochs=2)
    reference = warm_up(optimizer=torch.optim.SGD([torch.zeros(1)], lr=1e-2))
    expected = []
    for _ in range(2 * ROWS // BATCH):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()  # (no gradients: nothing moves; the schedule expects it first)
        reference.step()
    assert expected[0] == 1e-3 and expected[-1] == expected[-2] == pytest.approx(1e-2)  # (it rises, then stays)
    assert rates.steps == [[lr] * K for lr in expected]
    for i in range(K):
        assert not torch.equal(stack.member_state(i)["encoder.net.0.weight"], before[i])


class _PlateauProbe(VAEModule):
    """A task whose validation metric is its labels times the epoch: flat for a member whose labels are 0, rising for
    one whose labels are 1 (what the stack does with each member's metric is what is tested)."""

    def validation_step(self, batch, batch_idx):
        self.log("val/elbo", batch[1][0] * self.current_epoch)


def test_a_plateau_schedule_reduces_each_members_rate_on_its_own_metric():
    """Member 0's metric is flat, member 1's rises: with ReduceLROnPlateau(patience=1, factor=0.5) only member 0's rate
    halves, after its second epoch without improvement, and again two epochs later; member 1's stays."""
    plateau = functools.partial(ReduceLROnPlateau, mode="max", factor=0.5, patience=1)
    tasks = [_with_scheduler(_task("gaussian", seed), plateau, cls=_PlateauProbe) for seed in range(K)]
    stack = StackedTask(tasks)
    rates = _fit(stack, [_Data(seed, label=float(seed)) for seed in range(K)], epochs=5)
    assert rates.epochs == [[1.0, 1.0], [1.0, 1.0], [0.5, 1.0], [0.5, 1.0], [0.25, 1.0]]
    steps = len(rates.steps) // 5
    assert rates.steps[2 * steps:][0] == [1e-2, 1e-2] and rates.steps[3 * steps:][0] == [0.5e-2, 1e-2]  # (next epoch)


def test_a_members_rate_scales_its_own_slice_of_the_update_exactly():
    """Member 0 at half the rate, member 1 at the rate: after three stacked Adam steps each member's parameters are
    those of its own Adam at its own rate (on the same gradients)."""
    tasks = [_task("gaussian", seed) for seed in range(K)]
    stack = StackedTask(tasks)
    stack.lr_factors = [0.5, 1.0]
    optimizer = stack.configure_optimizers()
    separate = [torch.optim.Adam(task.net.encoder.parameters(), lr=1e-2 * factor)
                for task, factor in zip(tasks, stack.lr_factors)]
    x = torch.bernoulli(torch.rand(3, K, BATCH, PIXELS, generator=torch.Generator().manual_seed(0)))
    for step in range(3):
        encoder = stack.splits["encoder"]
        for i, task in enumerate(tasks):  # the same gradients for both: a function of each member's own rows
            task.net.encoder.zero_grad()
            task.net.encoder(x[step, i]).square().mean().backward()
        optimizer.zero_grad()
        (K * encoder(x[step].flatten(0, 1)).square().mean()).backward()  # (K x the mean: the members' sum)
        stack.optimizer_step(0, step, optimizer)
        for opt in separate:
            opt.step()
    for i, task in enumerate(tasks):
        for name, value in task.net.encoder.named_parameters():
            torch.testing.assert_close(stack.splits["encoder"].member_state(i)[name], value, rtol=1e-5, atol=1e-7)


def test_each_members_plateau_continues_from_the_stacks_checkpoint():
    """The members' plateau schedules (their rates, best values and patience counts) are in the stack's last
    checkpoint, and a stack built again from it continues them (an interrupted stack run again into its folder)."""
    plateau = functools.partial(ReduceLROnPlateau, mode="max", factor=0.5, patience=0)
    tasks = [_with_scheduler(_task("gaussian", seed), plateau) for seed in range(K)]
    stack = StackedTask(tasks)
    stack.configure_optimizers()
    for metrics in ([1.0, 1.0], [0.0, 2.0]):  # member 0 gets worse once: its rate halves
        for schedule, value in zip(stack._plateaus, metrics):
            schedule.step(value)
    checkpoint = {}
    stack.on_save_checkpoint(checkpoint)
    again = StackedTask(tasks)
    again.on_load_checkpoint(checkpoint)
    again.configure_optimizers()
    assert again.lr_factors == [0.5, 1.0]
    assert [p.best for p in again._plateaus] == [1.0, 2.0]
