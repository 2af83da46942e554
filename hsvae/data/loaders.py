"""A DataLoader replacement for data that fits in memory.

Datasets of this project (MNIST, the synthetic sphere, graphs) are small enough to live in memory,
on the GPU when there is one. Slicing a tensor per batch costs microseconds, where a ``DataLoader``
with per-item ``__getitem__`` and collation costs far more than a small MLP's step.
"""

from __future__ import annotations

from collections.abc import Iterator

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
        self.epoch = 0
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
        order = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
        return order.to(self.tensors[0].device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self._indices()
        self.epoch += 1
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.per_rank)
            if order is None:
                yield tuple(t[lo:hi] for t in self.tensors)
            else:
                idx = order[lo:hi]
                yield tuple(t[idx] for t in self.tensors)
