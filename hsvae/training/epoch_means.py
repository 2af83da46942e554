"""Per-epoch statistics without per-step logging.

On CPU a ``self.log`` call per metric per step costs more than a small model's training step; the
modules accumulate their few scalars on the device here and log the epoch means once.
"""

from __future__ import annotations

import torch


class EpochMeans:
    """Weighted running means of named tensors, scalars or vectors (detached; no host
    synchronisation). The names and shapes are those of the first :meth:`add` after a :meth:`reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._names: tuple[str, ...] = ()
        self._shapes: tuple[torch.Size, ...] = ()
        self._sums: torch.Tensor | None = None
        self._weight = 0

    def add(self, values: dict[str, torch.Tensor], weight: int = 1) -> None:
        stats = torch.cat([v.detach().float().reshape(-1) for v in values.values()]) * weight
        if self._sums is None:
            self._names, self._sums = tuple(values), stats
            self._shapes = tuple(v.shape for v in values.values())
        else:
            if tuple(values) != self._names:
                raise ValueError(f"statistics {tuple(values)} differ from the epoch's {self._names}")
            self._sums = self._sums + stats
        self._weight += weight

    def means(self) -> dict[str, torch.Tensor]:
        """The means so far (empty before the first :meth:`add`), each of its statistic's shape."""
        if self._sums is None:
            return {}
        parts = (self._sums / self._weight).split([shape.numel() for shape in self._shapes])
        return {name: part.view(shape) for name, part, shape in zip(self._names, parts, self._shapes)}
