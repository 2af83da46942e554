"""Latents in R^d. The Gaussian latent (the N-VAE): diagonal normal posterior; standard normal prior, or a learnt
one. A deterministic latent: the plain autoencoder baseline of the S-VAE paper's synthetic experiment, whose
"posterior" is a point mass at the encoder's output, with a zero KL term and no likelihood bound to report (the
importance-sampled log-likelihood is undefined: the ``ll`` evaluator logs nothing for it).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints
from torch.nn import functional as F

from hsvae.distributions import DiagonalNormal
from hsvae.special import at_least_float32

from .base import LatentFamily, PosteriorSample
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



class PointMass(Distribution):
    """A point mass at ``loc`` (``event_shape == loc.shape[-1:]``); ``rsample`` returns ``loc`` itself."""

    arg_constraints = {"loc": constraints.real_vector}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, validate_args: bool | None = None):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        return self.loc.expand(self._extended_shape(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc


class DeterministicLatent(LatentFamily):
    """z = encoder output in R^d; no prior term (a regular autoencoder)."""

    has_prior = False

    def __init__(self, dim: int):
        super().__init__(dim)

    @property
    def event_size(self) -> int:
        return self.dim

    @property
    def raw_size(self) -> int:
        return self.dim

    def posterior(self, raw: torch.Tensor) -> PointMass:
        return PointMass(raw)

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        raise NotImplementedError("a deterministic autoencoder has no prior: it cannot be sampled from")

    def kl(self, q: Distribution, sample: PosteriorSample | None = None) -> torch.Tensor:
        return torch.zeros(q.batch_shape, dtype=q.loc.dtype, device=q.loc.device)
