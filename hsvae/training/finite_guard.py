"""Stop training at a non-finite loss, naming the step and the loss terms, without a host read per step.

``if not torch.isfinite(loss)`` in a training step reads the device from the host at every step: on a GPU it
waits for the step's kernels and stalls the pipeline the samplers were written to keep free of
synchronisation. :class:`FiniteLossGuard` keeps the check and moves the read:

- on the CPU a read costs nothing, so :meth:`FiniteLossGuard.observe` checks at once and raises at the very
  step;
- on any other device ``observe`` only records, on the device, the first non-finite step since the last check
  and its loss terms; the guard reads that record once before each validation and at the end of each
  training epoch -- before the epoch's checkpoints are written, so the last checkpoint on disk is the last
  good one -- and raises there, naming the step and the terms as the immediate check would.

The module owns its guard and registers it with Lightning through ``configure_callbacks``.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from hsvae.utils.errors import NonFiniteLossError


class FiniteLossGuard(pl.Callback):
    """Watches one module's training loss.

    Args:
        hint: the last sentence of the error (what to try), e.g. "Lower the learning rate, ...".
        defer: record and check later (True) or check each step (False); None: defer except on the CPU.
    """

    def __init__(self, hint: str, defer: bool | None = None):
        self.hint, self.defer = hint, defer
        self._reset()

    def _reset(self) -> None:
        self._names: tuple[str, ...] = ()
        self._where: list[tuple[int, int, int, dict[str, float]]] = []  # per observed step: host-side facts
        self._first: torch.Tensor | None = None  # index of the first non-finite step, -1 if none (on the device)
        self._values: torch.Tensor | None = None  # the loss terms at that step (on the device)

    def observe(self, terms: dict[str, torch.Tensor], step: int, epoch: int, batch_idx: int,
                **scalars: float) -> None:
        """Record one training step. ``terms``: the loss first, then its parts (scalar tensors, one device);
        ``scalars``: host numbers to name in the message (the KL weight, ...)."""
        values = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
        if not (self.defer if self.defer is not None else values.device.type != "cpu"):
            if not bool(torch.isfinite(values[0])):
                raise NonFiniteLossError(self._message(step, epoch, batch_idx, tuple(terms), values.tolist(),
                                                       scalars, checked=None))
            return
        if self._first is None:
            self._names = tuple(terms)
            self._first = torch.full((), -1, dtype=torch.long, device=values.device)
            self._values = torch.zeros_like(values)
        new = ~torch.isfinite(values[0]) & (self._first < 0)
        # the step's index is a host number (the steps recorded so far): a kernel argument, no copy to the device
        self._first = torch.where(new, len(self._where), self._first)
        self._values = torch.where(new, values, self._values)
        self._where.append((step, epoch, batch_idx, scalars))

    def check(self) -> None:
        """Read the record (one host read) and raise if a step since the last check was not finite."""
        if self._first is None:
            return
        first, values, where, names = int(self._first), self._values.tolist(), self._where, self._names
        self._reset()
        if first >= 0:
            step, epoch, batch_idx, scalars = where[first]
            raise NonFiniteLossError(self._message(step, epoch, batch_idx, names, values, scalars,
                                                   checked=(where[0][0], where[-1][0])))

    def _message(self, step: int, epoch: int, batch_idx: int, names: tuple[str, ...], values: list[float],
                 scalars: dict[str, float], checked: tuple[int, int] | None) -> str:
        parts = ", ".join([*(f"{n}={v:.6g}" for n, v in zip(names, values)), *(f"{n}={v:.4g}" for n, v in scalars.items())])
        found = f"; found when checking steps {checked[0]}-{checked[1]}" if checked else ""
        return (f"non-finite loss at global step {step} (epoch {epoch}, batch {batch_idx}{found}): {parts}. "
                f"Training stopped; checkpoints written so far are kept. {self.hint}")

    # -- the checks' places: before anything of the epoch is checkpointed ------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check()
