"""Small helpers for ``nn.Module`` state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode and without autograd for the block; its train/eval mode is restored after it,
    also when the block raises (a plot or metric in the middle of training must not leave dropout off)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)
