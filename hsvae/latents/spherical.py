"""Spherical latent families on S^d in R^(d+1): vMF (the S-VAE), spherical Cauchy, Power Spherical.

All three share the parameterisation of the direction (the first d + 1 raw outputs, normalised to a
unit vector) and differ in the one concentration parameter and its constraint. All use the uniform
prior on the sphere.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher

from .base import LatentFamily


class SphericalLatent(LatentFamily):
    """Common part: ``raw[..., :d+1]`` -> unit direction, ``raw[..., d+1]`` -> concentration."""

    spherical = True

    @property
    def event_size(self) -> int:
        return self.dim + 1

    @property
    def raw_size(self) -> int:
        return self.dim + 2

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        direction, s = raw[..., : self.event_size], raw[..., self.event_size]
        # clamp_min: an all-zero direction output would otherwise give 0/0.
        loc = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)
        return loc, s

    def prior(self, like: torch.Tensor) -> HypersphericalUniform:
        return HypersphericalUniform(self.event_size, dtype=like.dtype, device=like.device)


class VonMisesFisherLatent(SphericalLatent):
    """q(z|x) = vMF(mu, kappa), p(z) = uniform on S^d (Davidson et al., 2018).

    kappa = softplus(s) + ``min_concentration``; the S-VAE authors' code uses 1, which keeps the
    posterior away from the uniform where the KL collapses.

    Args:
        dim: intrinsic dimension d (samples live in R^(d+1)).
        min_concentration: lower bound of kappa.
        grad_correction: use the rejection sampler's gradient-correction term (unbiased gradient in kappa;
            a model that supports it calls :meth:`rsample`).
    """

    def __init__(self, dim: int, min_concentration: float = 1.0, grad_correction: bool = False):
        super().__init__(dim)
        if min_concentration < 0:
            raise ValueError(f"latent.min_concentration must be >= 0, got {min_concentration}")
        self.min_concentration = min_concentration
        self.grad_correction = grad_correction

    def posterior(self, raw: torch.Tensor) -> VonMisesFisher:
        loc, s = self.split(raw)
        return VonMisesFisher(loc, F.softplus(s) + self.min_concentration)


class SphericalCauchyLatent(SphericalLatent):
    """q(z|x) = spCauchy(mu, rho), p(z) = uniform on S^d (Sablica and Hornik, 2025).

    rho = max_rho * sigmoid(s) keeps rho in [0, 1); ``max_rho`` bounds the concentration so that
    float32 training never reaches rho = 1 exactly.
    """

    def __init__(self, dim: int, max_rho: float = 1.0 - 1e-6):
        super().__init__(dim)
        if not 0.0 < max_rho < 1.0:
            raise ValueError(f"latent.max_rho must lie in (0, 1), got {max_rho}")
        self.max_rho = max_rho

    def posterior(self, raw: torch.Tensor) -> SphericalCauchy:
        loc, s = self.split(raw)
        return SphericalCauchy(loc, self.max_rho * torch.sigmoid(s))


class PowerSphericalLatent(SphericalLatent):
    """q(z|x) = PowerSpherical(mu, kappa), p(z) = uniform on S^d (De Cao and Aziz, 2020).

    kappa = softplus(s) + ``min_concentration`` (1 in the authors' example).
    """

    def __init__(self, dim: int, min_concentration: float = 1.0):
        super().__init__(dim)
        if min_concentration < 0:
            raise ValueError(f"latent.min_concentration must be >= 0, got {min_concentration}")
        self.min_concentration = min_concentration

    def posterior(self, raw: torch.Tensor) -> PowerSpherical:
        loc, s = self.split(raw)
        return PowerSpherical(loc, F.softplus(s) + self.min_concentration)


def rsample(latent: LatentFamily, q: Distribution, sample_shape: torch.Size = torch.Size()):
    """Draw ``z ~ q`` and a zero-valued gradient-correction tensor (None when there is none).

    Only the vMF's rejection sampler has a correction term (see ``VonMisesFisher.rsample_with_correction``);
    the caller adds ``f(z).detach() * correction`` to its surrogate loss.
    """
    if getattr(latent, "grad_correction", False) and hasattr(q, "rsample_with_correction"):
        return q.rsample_with_correction(sample_shape)
    return q.rsample(sample_shape), None
