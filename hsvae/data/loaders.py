"""A DataLoader replacement for data that fits in memory.

Datasets of this project (MNIST, the synthetic sphere, graphs) are small enough to live in memory,
on the GPU when there is one. Slicing a tensor per batch costs microseconds, where a ``DataLoader``
with per-item ``__getitem__`` and collation costs far more than a small MLP's step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class TensorLoader:
    """Iterate over aligned tensors in mini-batches, reshuffled each epoch.

    Under distributed training each rank sees a disjoint, equally long share of every epoch's
    permutation (the permutation is seeded identically on every rank), as a ``DistributedSampler`` would.

    Args:
        tensors: tensors with the same first dimension (e.g. images and labels).
        batch_size: rows per batch (> 0).
        shuffle: draw a new permutation each epoch (seeded by ``seed`` and the epoch number).
        drop_last: drop the last incomplete batch.
        rank, world_size: this process's share under distributed training.
        widths: optional, on the CPU: per row of the first tensor, how many of its leading columns are used (the
            tokens of a padded sequence). Each batch of the first tensor is then cut to its rows' widest, computed
            on the host from this copy: the data may live on a GPU without a device read per batch.
        epoch_of: when given, the epoch whose permutation an iteration draws (e.g. the trainer's current epoch:
            a resumed fit continues with the order of the epoch it resumes at); else the iterations are counted.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        widths: torch.Tensor | None = None,
        epoch_of: Callable[[], int] | None = None,
    ):
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"TensorLoader: tensors differ in length: {[t.shape[0] for t in tensors]}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"TensorLoader: rank {rank} outside world size {world_size}")
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        if widths is not None and (widths.shape != (n,) or widths.device.type != "cpu"):
            raise ValueError(f"TensorLoader: widths must be a CPU tensor of shape ({n},), got {tuple(widths.shape)} "
                             f"on {widths.device}")
        self.widths = widths
        self.epoch = 0
        self.epoch_of = epoch_of
        self.per_rank = n // world_size if world_size > 1 else n

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    def _indices(self) -> torch.Tensor | None:
        n = self.tensors[0].shape[0]
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        # Same permutation on every rank; rank r takes every world_size-th index from r.
        return order[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.epoch_of is not None:
            self.epoch = self.epoch_of()
        host_order = self._indices()  # on the CPU
        order = None if host_order is None else host_order.to(self.tensors[0].device)
        self.epoch += 1
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.per_rank)
            if order is None:
                batch = [t[lo:hi] for t in self.tensors]
                rows = slice(lo, hi)
            else:
                idx = order[lo:hi]
                batch = [t[idx] for t in self.tensors]
                rows = host_order[lo:hi]
            if self.widths is not None:
                batch[0] = batch[0][:, : int(self.widths[rows].max())]
            yield tuple(batch)
