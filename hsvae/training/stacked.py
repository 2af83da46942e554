"""Training a stack of runs (hsvae.models.stacked): K models, one per seed, as one Lightning fit.

* The data: each member keeps its own data module, as its separate run builds it (its split, drawn with its
  seed, its shuffling), and its per-batch transforms (MNIST's dynamic binarisation) run under member i's random
  stream; the loaders' batches are stacked, or listed for graphs (:class:`StackedDataModule`).
* The module (:class:`StackedTask`; :class:`StackedVAEModule` here, the VGAE's in
  :mod:`hsvae.training.stacked_links`): the members' summed loss, with each member's KL warm-up as a separate run
  has it; every member's training statistics and validation metrics; each member's random stream saved in the
  stack's checkpoint.
* The selection (:class:`MemberSelection`): early stopping and the best epoch per member, on its own value of the
  selection metric; a member that stops keeps training with the others but is no longer selected; the fit ends
  when every member has stopped (or at ``max_epochs``).
* The history (:class:`MemberHistory`): every member's per-epoch metrics, for its own loggers after the fit.

Dimension convention: a stacked batch is ``(x, y)`` with ``x`` of shape ``(K, B, ...)`` and ``y`` ``(K, B)``; a
stacked graph batch is the list of the members' graphs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

import pytorch_lightning as pl
import torch

from hsvae.models.stacked import MemberStreams, StackedVAE

from .task import ELBOTask


def single_pass_adam(optimizer: Callable[..., torch.optim.Optimizer]) -> Callable[..., torch.optim.Optimizer]:
    """A stack's optimiser: Adam or AdamW with ``fused=True`` unless the config chose ``fused`` or ``foreach``.

    The same update (Adam is elementwise), in one pass over each parameter instead of one pass per operation:
    a stack's parameters are K times a member's, and on a CPU the multi-pass update of tensors that no longer fit
    in the cache cost a 4-member stack 1.6x the members' separate updates (measured; the fused one is faster than
    either). Other optimisers are used as configured."""
    keywords = getattr(optimizer, "keywords", None)
    if getattr(optimizer, "func", None) in (torch.optim.Adam, torch.optim.AdamW) and keywords is not None \
            and not {"fused", "foreach"} & set(keywords):
        return functools.partial(optimizer, fused=True)
    return optimizer


class StackedLoader:
    """Iterate over K loaders of equally many batches: a step's batches of tensors stacked (``(K, B, ...)`` per
    part), any other batches (a graph) as the list of the members' batches."""

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
            first = batches[0]
            if isinstance(first, (tuple, list)) and all(isinstance(part, torch.Tensor) for part in first):
                yield tuple(torch.stack(parts) for parts in zip(*batches))
            else:
                yield list(batches)


class StackedDataModule(pl.LightningDataModule):
    """K data modules as one: their loaders stacked, their batch transforms applied per member under its stream.

    Args:
        members: the members' data modules, each built as its separate run builds it (its own seed).
        streams: the members' random streams (shared with the stacked model).
    """

    def __init__(self, members: Sequence[pl.LightningDataModule], streams: MemberStreams):
        super().__init__()
        if len(members) != len(streams):
            raise ValueError(f"members: {len(members)} data modules for {len(streams)} random streams")
        self.members = list(members)
        self.streams = streams

    def setup(self, stage: str | None = None) -> None:
        for member in self.members:
            member.trainer = self.trainer  # (the device, the rank, whether it is training)
            member.setup(stage)

    def train_dataloader(self) -> StackedLoader:
        return StackedLoader([m.train_dataloader() for m in self.members])

    def val_dataloader(self) -> StackedLoader:
        return StackedLoader([m.val_dataloader() for m in self.members])

    def test_dataloader(self) -> StackedLoader:
        return StackedLoader([m.test_dataloader() for m in self.members])

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        if isinstance(batch, list):  # the members' own batches (graphs): each moved as its data module moves it
            return [m.transfer_batch_to_device(b, device, dataloader_idx) for m, b in zip(self.members, batch)]
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        stacked = not isinstance(batch, list)
        parts = []
        for i, member in enumerate(self.members):
            with self.streams.member(i):
                part = tuple(t[i] for t in batch) if stacked else batch[i]
                parts.append(member.on_after_batch_transfer(part, dataloader_idx))
        return tuple(torch.stack(column) for column in zip(*parts)) if stacked else parts


class StackedTask(ELBOTask):
    """What the stacked modules share: each member's metrics as its separate run logs them.

    - ``member_metrics``: every member's validation metrics of this validation epoch (``(K,)`` each; None before
      the first), read at the epoch's end by :class:`MemberSelection` and :class:`MemberHistory` (callbacks'
      hooks run before the module's);
    - :attr:`member_train_metrics`: every member's ``train/`` metrics of this epoch, from the ``member/<name>``
      statistics a training step passes to :meth:`observe` (``(K,)`` each); only the members' sums and means are
      logged under the stack's own names;
    - :meth:`member_results`: member i's fit metrics for its results.json;
    - each member's learning-rate schedule (:class:`MemberSchedules`, from the run's ``scheduler``): Adam steps
      with the members' largest rate, and a member with a smaller one has its update scaled down to its rate
      (Adam's update, weight decay included, is proportional to the rate).

    Args:
        net: the stacked model (:class:`~hsvae.models.stacked.MemberStack`).
        optimizer: the run's partial optimiser constructor (Adam fused, see :func:`single_pass_adam`).
        scheduler: the run's partial LR scheduler constructor, one per member (None: a constant rate).
        warmup_epochs, final_beta: the KL warm-up, as :class:`~hsvae.training.task.ELBOTask`'s.
    """

    member_metrics: dict[str, torch.Tensor] | None = None

    def __init__(self, net, optimizer: Callable[..., torch.optim.Optimizer], scheduler: Callable | None = None,
                 warmup_epochs: float = 0.0, final_beta: float = 1.0):
        super().__init__(net, single_pass_adam(optimizer), None, warmup_epochs, final_beta)
        self.member_scheduler = scheduler
        self.schedules: MemberSchedules | None = None
        self._rates: tuple[float, torch.Tensor | None] | None = None  # (the largest rate, each one / the largest)
        self._restored_schedules: dict | None = None

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.member_scheduler is not None:
            self.schedules = MemberSchedules(self.member_scheduler, optimizer.param_groups[0]["lr"], self.net.k)
            if self._restored_schedules is not None:
                self.schedules.load_state_dict(self._restored_schedules)
            self._set_rates()
        return optimizer

    def _set_rates(self) -> None:
        rates = self.schedules.rates()
        top = max(rates)
        ratios = None if all(r == top for r in rates) else torch.tensor([r / top for r in rates], device=self.device)
        self._rates = (top, ratios)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        if self._rates is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        top, ratios = self._rates
        for group in optimizer.param_groups:
            group["lr"] = top
        if ratios is None:  # every member at the same rate: Adam's own step
            optimizer.step(closure=optimizer_closure)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        optimizer.step(closure=optimizer_closure)
        with torch.no_grad():
            for p, old in zip(params, before):  # member i's update at its own rate: (p - old) * rate_i / top
                p.sub_(old).mul_(ratios.view(-1, *[1] * (p.dim() - 1))).add_(old)

    def step_schedules(self, metrics: list[float] | None) -> None:
        """One epoch's step of every member's schedule (``metrics``: the members' monitored values)."""
        self.schedules.step(metrics)
        self._set_rates()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.schedules is not None:  # where Lightning steps a separate run's scheduler: after the epoch
            metrics = self.member_metrics
            self.step_schedules(None if metrics is None else metrics[self.monitor].tolist())

    def epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        return {k: v for k, v in means.items() if not k.startswith("member/")}

    @property
    def member_train_metrics(self) -> dict[str, torch.Tensor]:
        means = {k.removeprefix("member/"): v for k, v in self._train_stats.means().items() if k.startswith("member/")}
        return {f"train/{k}": v for k, v in self.member_epoch_metrics(means).items()}

    def member_epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The members' ``train/`` metrics from the epoch means of their statistics (by default the means)."""
        return means

    def member_results(self, i: int, selection: MemberSelection) -> dict[str, float]:
        raise NotImplementedError

    # A stack checkpoint continues every member where it was: its random stream with the rest of the fit's state.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        streams = self.net.streams
        checkpoint["member_streams"] = {"states": streams.states, "cuda_states": streams.cuda_states}
        if self.schedules is not None:
            checkpoint["member_schedules"] = self.schedules.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_schedules = checkpoint.get("member_schedules")  # (loaded once configure_optimizers built them)
        saved = checkpoint["member_streams"]
        self.net.streams.states = [s.clone() for s in saved["states"]]
        if self.net.streams.cuda_states is not None and saved["cuda_states"] is not None:
            self.net.streams.cuda_states = [s.clone() for s in saved["cuda_states"]]


class MemberSchedules:
    """Each member's learning rate as its separate run's scheduler sets it: the run's scheduler, one per member,
    each on a one-parameter stand-in optimiser at the run's rate, stepped once per epoch (a
    ``ReduceLROnPlateau`` on the member's own value of the monitored metric, as Lightning steps a separate run's).
    Only the learning rate is followed (not a scheduler's momentum).

    Args:
        factory: the run's partial scheduler constructor (``factory(optimizer=...)``).
        lr: the optimiser's learning rate.
        k: the number of members.
    """

    def __init__(self, factory: Callable, lr: float, k: int):
        self._optimizers = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr) for _ in range(k)]
        self.schedulers = [factory(optimizer=optimizer) for optimizer in self._optimizers]

    def rates(self) -> list[float]:
        """Every member's current learning rate."""
        return [optimizer.param_groups[0]["lr"] for optimizer in self._optimizers]

    def step(self, metrics: list[float] | None) -> None:
        """One epoch's step; ``metrics``: the members' monitored values (a plateau scheduler's; None when this
        epoch had no validation, which leaves a plateau scheduler where it is)."""
        for i, scheduler in enumerate(self.schedulers):
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if metrics is not None:
                    scheduler.step(metrics[i])
            else:
                scheduler.step()

    def state_dict(self) -> dict:
        return {"schedulers": [s.state_dict() for s in self.schedulers], "rates": self.rates()}

    def load_state_dict(self, state: dict) -> None:
        for scheduler, saved, rate, optimizer in zip(self.schedulers, state["schedulers"], state["rates"],
                                                     self._optimizers):
            scheduler.load_state_dict(saved)
            optimizer.param_groups[0]["lr"] = rate


class StackedVAEModule(StackedTask):
    """Trains a :class:`~hsvae.models.stacked.StackedVAE` on stacked ``(x, y)`` batches (labels ignored).

    ``member_metrics`` holds every member's ``val/elbo``, ``val/reconstruction`` and ``val/kl`` (means over the
    validation set, as a separate run's), of which :class:`MemberSelection` selects on ``val/elbo``.
    """

    def __init__(
        self,
        net: StackedVAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
    ):
        super().__init__(net, optimizer, scheduler, warmup_epochs, final_beta)
        self._val_sums: torch.Tensor | None = None  # (2, K): the members' summed reconstruction and KL
        self._val_count = 0

    def member_results(self, i: int, selection: MemberSelection) -> dict[str, float]:
        """Member i's fit metrics as its separate run reports them: the last validation metrics and, from the
        checkpoint callback, the best validation ELBO."""
        return {**{k: float(v[i]) for k, v in self.member_metrics.items()}, "best/val_elbo": selection.best_scores[i]}

    def member_epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        beta = self.beta(int(self.trainer.num_training_batches))
        return {**means, "elbo": means["reconstruction"] - means["kl"], "beta": torch.full_like(means["kl"], beta)}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        terms = self.net(x)
        beta = self.beta(batch_idx)
        losses = terms.member_losses(beta)
        loss = losses.sum()
        reconstruction, kl = terms.reconstruction.mean(-1), terms.kl.mean(-1)  # (K,)
        self.observe({"loss": loss, "reconstruction": reconstruction.mean(), "kl": kl.mean()}, batch_idx,
                     weight=x.shape[1], beta=beta,
                     extra={"member/loss": losses, "member/reconstruction": reconstruction, "member/kl": kl})
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums, self._val_count = None, 0

    def validation_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        if self.trainer.sanity_checking:  # Lightning isolates a run's random state during its sanity check
            with self.net.streams.isolated():
                terms = self.net(x)
        else:
            terms = self.net(x)
        sums = torch.stack([terms.reconstruction.sum(-1), terms.kl.sum(-1)]).detach()  # (2, K)
        self._val_sums = sums if self._val_sums is None else self._val_sums + sums
        self._val_count += x.shape[1]

    @property
    def member_metrics(self) -> dict[str, torch.Tensor] | None:
        """The members' validation metrics over the batches seen this validation epoch (complete at its end)."""
        if self._val_sums is None:
            return None
        reconstruction, kl = self._val_sums / self._val_count
        return {"val/elbo": reconstruction - kl, "val/reconstruction": reconstruction, "val/kl": kl}

    def on_validation_epoch_end(self) -> None:
        if self._val_sums is not None:
            self.log("val/elbo", self.member_metrics["val/elbo"].mean(), prog_bar=True)  # (the members' mean)


class MemberSelection(pl.Callback):
    """Early stopping and best-epoch selection per member of a stack, on its own value of the module's ``monitor``
    (higher is better: the validation ELBO, a link AUC), as ``EarlyStopping(patience)`` and ``ModelCheckpoint``
    (mode max, strict improvement) select a separate run's. The module exposes ``member_metrics`` (each metric's
    members' values this validation epoch, ``(K,)``) and ``monitor``.

    After the fit, ``best_states[i]`` is member i's parameters at its best epoch (under a separate model's names,
    on the CPU), ``best_epochs[i]`` that epoch, ``best_scores[i]`` its monitored value and ``best_metrics[i]``
    all its validation metrics there.

    Args:
        patience: validation epochs without improvement after which a member stops (None: members never stop).
    """

    def __init__(self, patience: int | None):
        if patience is not None and (not isinstance(patience, int) or patience < 1):
            raise ValueError(f"patience must be an integer >= 1 (or None), got {patience!r}")
        self.patience = patience
        self.best_states: list[dict[str, torch.Tensor] | None] = []
        self.best_scores: list[float] = []
        self.best_epochs: list[int] = []
        self.best_metrics: list[dict[str, float]] = []
        self.stopped: list[bool] = []
        self.history: list[list[float]] = []  #: every member's validation ELBO per epoch
        self._waits: list[int] = []
        self._restored: dict | None = None  # a resumed stack's state (Lightning loads it before fit starts)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: StackedVAEModule) -> None:
        if trainer.sanity_checking or pl_module.member_metrics is None:
            return
        metrics = {name: values.tolist() for name, values in pl_module.member_metrics.items()}  # one host read
        scores = metrics[pl_module.monitor]
        for i, score in enumerate(scores):
            self.history[i].append(score)
            if self.stopped[i]:
                continue
            if score > self.best_scores[i]:
                self.best_scores[i], self.best_epochs[i], self._waits[i] = score, trainer.current_epoch, 0
                self.best_metrics[i] = {name: values[i] for name, values in metrics.items()}
                self.best_states[i] = {k: v.detach().cpu().clone() for k, v in pl_module.net.member(i).items()}
            else:
                self._waits[i] += 1
                self.stopped[i] = self.patience is not None and self._waits[i] >= self.patience
        if all(self.stopped):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best_states": self.best_states, "best_scores": self.best_scores, "best_epochs": self.best_epochs,
                "best_metrics": self.best_metrics, "stopped": self.stopped, "history": self.history,
                "waits": self._waits}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: StackedTask) -> None:
        k = pl_module.net.k
        self.best_states, self.best_scores, self.best_epochs = [None] * k, [float("-inf")] * k, [-1] * k
        self.best_metrics = [{} for _ in range(k)]
        self.stopped, self._waits, self.history = [False] * k, [0] * k, [[] for _ in range(k)]
        restored, self._restored = self._restored, None
        if restored is not None:
            self.best_states, self.best_scores = restored["best_states"], restored["best_scores"]
            self.best_epochs, self.best_metrics = restored["best_epochs"], restored["best_metrics"]
            self.stopped, self.history, self._waits = restored["stopped"], restored["history"], restored["waits"]


class MemberHistory(pl.Callback):
    """Each member's per-epoch metrics as its separate run's loggers receive them: ``rows[i]`` is member i's list
    of ``(step, metrics)`` (the validation metrics, then the ``train/`` means, of every epoch, with ``epoch``),
    at the step Lightning logs an epoch's metrics at (the epoch's last optimiser step). The CLI replays them into
    each member's own loggers after the fit (one W&B run at a time)."""

    def __init__(self) -> None:
        self.rows: list[list[tuple[int, dict[str, float]]]] = []
        self._restored: list | None = None  # a resumed stack's rows (Lightning loads them before fit starts)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: StackedTask) -> None:
        restored, self._restored = self._restored, None
        self.rows = restored if restored is not None else [[] for _ in range(pl_module.net.k)]

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict["rows"]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: StackedTask) -> None:
        if not trainer.sanity_checking and pl_module.member_metrics is not None:
            self._add(trainer, pl_module.member_metrics)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: StackedTask) -> None:
        self._add(trainer, pl_module.member_train_metrics)

    def _add(self, trainer: pl.Trainer, metrics: dict[str, torch.Tensor]) -> None:
        values = {name: v.tolist() for name, v in metrics.items()}  # one host read per epoch
        step = max(trainer.global_step - 1, 0)
        for i, rows in enumerate(self.rows):
            rows.append((step, {**{name: v[i] for name, v in values.items()}, "epoch": trainer.current_epoch}))
