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

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x_i | params_j) for every pair: ``x`` ``(B, ...)``, ``params`` ``(G, n)`` -> ``(B, G)``."""
        return self.log_prob(x, params[:, None, :].expand(-1, x.shape[0], -1)).T


class BernoulliLikelihood(Likelihood):
    """Bernoulli on each pixel, ``params`` are logits; x in [0, 1] (binary, or grey levels as in BCE)."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).expand_as(params) if params.dim() > 2 else x.reshape(params.shape)
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # -BCE(l, x) = x l - softplus(l) for any x in [0, 1]: one matrix product for all pairs
        return x.reshape(x.shape[0], -1) @ params.T - F.softplus(params).sum(-1)


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

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        sq = x.pow(2).sum(-1, keepdim=True) - 2 * x @ params.T + params.pow(2).sum(-1)
        return -0.5 * sq / self.sigma**2 - params.shape[-1] * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
