"""The Gaussian latent (the N-VAE): diagonal normal posterior, standard normal prior on R^d."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hsvae.distributions import DiagonalNormal, StandardNormal

from .base import LatentFamily


class GaussianLatent(LatentFamily):
    """q(z|x) = N(mu, diag(sigma^2)), p(z) = N(0, I), z in R^d.

    The encoder produces (mu, s) with sigma = softplus(s) + min_scale; softplus rather than exp keeps
    the scale from exploding early in training, and ``min_scale`` keeps log q finite.
    """

    def __init__(self, dim: int, min_scale: float = 1e-4):
        super().__init__(dim)
        self.min_scale = min_scale

    @property
    def event_size(self) -> int:
        return self.dim

    @property
    def raw_size(self) -> int:
        return 2 * self.dim

    def posterior(self, raw: torch.Tensor) -> DiagonalNormal:
        loc, s = raw.split(self.dim, dim=-1)
        return DiagonalNormal(loc, F.softplus(s) + self.min_scale)

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> StandardNormal:
        return StandardNormal(self.dim, dtype=dtype, device=device)
