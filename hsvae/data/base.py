"""In-memory Lightning data modules: load once, keep the splits as tensors, batch by slicing."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
import torch

from .loaders import TensorLoader


@runtime_checkable
class SizedPoints(Protocol):
    """Data whose points have a size a model's input layer is built for: ``input_dim`` (flattened; a graph's node
    features), None where points have no fixed size (token strings)."""

    @property
    def input_dim(self) -> int | None: ...


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


class InMemoryDataModule(pl.LightningDataModule, abc.ABC):
    """Base class: subclasses implement :meth:`load_splits` returning train/val/test ``Split`` s.

    Batches are ``(x, y)`` tuples. The data moves to the training device once, in ``setup``
    (a GPU when there is one), so that no batch pays a host-to-device copy.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (defaults to ``batch_size``).
        seed: seed of the per-epoch shuffling and of any data split.
    """

    #: shape of one data point, e.g. (1, 28, 28) or (100,)
    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None

    def __init__(self, batch_size: int = 64, eval_batch_size: int | None = None, seed: int = 0):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.splits: dict[str, Split] = {}
        self._host_widths: dict[str, torch.Tensor | None] = {}

    @property
    def input_dim(self) -> int | None:
        """The size of one data point, flattened (what a model's input layer is built for); None for data without
        a fixed size (token strings)."""
        return math.prod(self.input_shape) if self.input_shape else None

    def fixed_inputs(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Inputs ``x`` of a split as the model sees them, drawn once with ``seed`` where a subclass draws them
        afresh for every training batch (an evaluation's labelled points); here ``x`` itself."""
        return x

    @abc.abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train": Split, "val": Split, "test": Split}`` on the CPU."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()
            self._host_widths = {name: self.row_widths(split) for name, split in self.splits.items()}
        device = self._device()
        if device is not None and device.type != "cpu":
            self.splits = {k: v.to(device) for k, v in self.splits.items()}

    def _device(self) -> torch.device | None:
        return self.trainer.strategy.root_device if self.trainer is not None else None

    def row_widths(self, split: Split) -> torch.Tensor | None:
        """Per data point, how many leading columns of ``x`` it uses (padded sequences; None: all), kept on the CPU
        so that loaders cut each batch to its widest row without a device read (see :class:`TensorLoader`)."""
        return None

    def _loader(self, split: str, train: bool) -> TensorLoader:
        if not self.splits:
            self.setup()
        s = self.splits[split]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorLoader(
            s.x,
            s.y,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            seed=self.seed,
            rank=rank,
            world_size=world,
            widths=self._host_widths.get(split),
            # the trainer's epoch: a resumed fit continues with the order of the epoch it resumes at
            epoch_of=(lambda: trainer.current_epoch) if train and trainer is not None else None,
        )

    def train_dataloader(self) -> TensorLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorLoader:
        return self._loader("test", train=False)
