"""Observation models p(x | z), given the decoder's output ``params`` (same number of elements as x per row)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Likelihood(nn.Module):
    """log p(x | params) summed over each data point's elements, shape ``params.shape[:-1]``."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    """Bernoulli on each pixel, ``params`` are logits; x in [0, 1] (binary, or grey levels as in BCE)."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).expand_as(params) if params.dim() > 2 else x.reshape(params.shape)
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class GaussianLikelihood(Likelihood):
    """Isotropic Gaussian N(x; params, sigma^2 I) with a fixed ``sigma``."""

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"GaussianLikelihood: sigma must be > 0, got {sigma}")
        self.sigma = sigma

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).expand_as(params) if params.dim() > 2 else x.reshape(params.shape)
        n = params.shape[-1]
        sq = ((x - params) / self.sigma).pow(2).sum(-1)
        return -0.5 * sq - n * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params
