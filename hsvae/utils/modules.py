"""Small helpers for ``nn.Module`` state."""

from __future__ import annotations

import warnings

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


def configure_compile() -> None:
    """What ``compile=true`` sets before ``torch.compile``: inductor draws its random numbers with torch's generator,
    as eager code does (a compiled run repeats an eager run's numbers from the same seed; on the CPU inductor's own
    random numbers cost about 3x a distribution's whole step), and dynamo's note that it traces through the
    distributions' cached constant builders (pure functions) is silenced."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
