"""Fully connected encoder and decoder (the S-VAE paper's MNIST networks: 784-256-128, ReLU, mirrored)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(sizes: Sequence[int], activate_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _check_sizes(name: str, in_features: int, hidden: Sequence[int]) -> None:
    if in_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"{name}: layer sizes must be positive, got in_features={in_features}, hidden={list(hidden)}")


class MLPEncoder(nn.Module):
    """x (any shape ``(B, ...)``, flattened) -> features of size ``hidden[-1]`` (ReLU after every layer)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (256, 128)):
        super().__init__()
        _check_sizes("MLPEncoder", in_features, hidden)
        self.out_features = hidden[-1] if hidden else in_features
        self.net = _mlp([in_features, *hidden], activate_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """Latent sample ``(..., in_features)`` -> likelihood parameters ``(..., out_features)`` (no final activation)."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int] = (128, 256)):
        super().__init__()
        _check_sizes("MLPDecoder", in_features, hidden)
        self.net = _mlp([in_features, *hidden, out_features], activate_last=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
