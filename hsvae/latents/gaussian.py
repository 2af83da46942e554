"""The Gaussian latent (the N-VAE): diagonal normal posterior; standard normal prior on R^d, or a learnt one."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hsvae.distributions import DiagonalNormal
from hsvae.special import at_least_float32

from .base import LatentFamily
from .priors import GaussianPrior


class GaussianLatent(LatentFamily):
    """q(z|x) = N(mu, diag(sigma^2)), p(z) = N(0, I) or a learnt prior, z in R^d.

    The encoder produces (mu, s) with sigma = softplus(s) + min_scale; softplus rather than exp keeps
    the scale from exploding early in training, and ``min_scale`` keeps log q finite.

    Args:
        dim: the dimension d.
        min_scale: lower bound of sigma.
        prior: ``"standard"`` N(0, I), ``"learned_diagonal"`` or ``"mixture"`` (of ``prior_components`` diagonal
            normals), learnt with the model (:mod:`.priors`).
        prior_components: the mixture's number of components K.
        kl: see :class:`~hsvae.latents.base.LatentFamily`.
    """

    def __init__(self, dim: int, min_scale: float = 1e-4, prior: str = "standard", prior_components: int = 10,
                 kl: str = "auto"):
        super().__init__(dim, kl)
        self.min_scale = min_scale
        self.prior_module = GaussianPrior(prior, dim, prior_components)
        self._choose_kl_estimator()

    @property
    def event_size(self) -> int:
        return self.dim

    @property
    def raw_size(self) -> int:
        return 2 * self.dim

    def posterior(self, raw: torch.Tensor) -> DiagonalNormal:
        loc, s = at_least_float32(raw).split(self.dim, dim=-1)  # (a half-precision head under autocast)
        return DiagonalNormal(loc, F.softplus(s) + self.min_scale)
