"""Per-epoch training statistics without per-step logging.

On CPU a ``self.log`` call per metric per step costs more than a small model's training step; the
modules accumulate their few scalars on the device here and log the epoch means once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class EpochMeans:
    """Weighted running means of named scalar tensors (detached; no host synchronisation)."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.reset()

    def reset(self) -> None:
        self._sums: torch.Tensor | None = None
        self._weight = 0

    def add(self, *values: torch.Tensor, weight: int = 1) -> None:
        stats = torch.stack([v.detach() for v in values]) * weight
        self._sums = stats if self._sums is None else self._sums + stats
        self._weight += weight

    def means(self) -> dict[str, torch.Tensor]:
        """The means so far (empty before the first :meth:`add`)."""
        if self._sums is None:
            return {}
        return dict(zip(self.names, (self._sums / self._weight).unbind()))
