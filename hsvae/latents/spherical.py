"""Spherical latent families on S^d in R^(d+1): vMF (the S-VAE), spherical Cauchy, Power Spherical.

All three share the parameterisation of the direction (the first d + 1 raw outputs, normalised to a
unit vector) and differ in the one concentration parameter and its constraint. Their prior is the uniform
on the sphere, or one learnt with the model (``prior``: vmf, power_spherical, mixture; :mod:`.priors`).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.distributions import PowerSpherical, SphericalCauchy, VonMisesFisher
from hsvae.special import at_least_float32

from .base import LatentFamily, PosteriorSample
from .priors import SphericalPrior


class SphericalLatent(LatentFamily):
    """Common part: ``raw[..., :d+1]`` -> unit direction, ``raw[..., d+1]`` -> concentration; the prior.

    Args:
        dim: intrinsic dimension d (samples live in R^(d+1)).
        prior: ``"uniform"`` on S^d, or a prior learnt with the model: ``"vmf"``, ``"power_spherical"``
            (a direction and a concentration, initialised near the uniform) or ``"mixture"`` (of
            ``prior_components`` vMFs with learnt directions, concentrations and weights); see :mod:`.priors`.
        prior_components: the mixture's number of components K.
        kl: see :class:`~hsvae.latents.base.LatentFamily`.
    """

    spherical = True

    def __init__(self, dim: int, prior: str = "uniform", prior_components: int = 10, kl: str = "auto"):
        super().__init__(dim, kl)
        self.prior_module = SphericalPrior(prior, self.dim + 1, prior_components)

    @property
    def event_size(self) -> int:
        return self.dim + 1

    @property
    def raw_size(self) -> int:
        return self.dim + 2

    @property
    def spheres(self) -> tuple[int, ...]:
        return (self.event_size,)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = at_least_float32(raw)  # a half-precision head (autocast): normalise and constrain in float32
        direction, s = raw[..., : self.event_size], raw[..., self.event_size]
        # clamp_min: an all-zero direction output would otherwise give 0/0.
        loc = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)
        return loc, s

    def extra_repr(self) -> str:
        kl = f", kl={self.kl_estimator}" if self.kl_estimator != "auto" else ""
        return super().extra_repr() + kl


class _SoftplusConcentration(SphericalLatent):
    """The families whose concentration is kappa = softplus(s) + ``min_concentration`` (:attr:`family` of the
    direction and kappa): the vMF and the Power Spherical."""

    family: type[Distribution]

    def __init__(self, dim: int, min_concentration: float = 1.0, prior: str = "uniform", prior_components: int = 10,
                 kl: str = "auto"):
        super().__init__(dim, prior, prior_components, kl)
        if min_concentration < 0:
            raise ValueError(f"min_concentration must be >= 0, got {min_concentration}")
        self.min_concentration = min_concentration
        self._choose_kl_estimator()

    def posterior(self, raw: torch.Tensor) -> Distribution:
        loc, s = self.split(raw)
        return self.family(loc, F.softplus(s) + self.min_concentration)


class VonMisesFisherLatent(_SoftplusConcentration):
    """q(z|x) = vMF(mu, kappa), p(z) = uniform on S^d (Davidson et al., 2018) or a learnt vMF (``prior``).

    kappa = softplus(s) + ``min_concentration``; the S-VAE authors' code uses 1, which keeps the
    posterior away from the uniform where the KL collapses.

    Args:
        dim: intrinsic dimension d (samples live in R^(d+1)).
        min_concentration: lower bound of kappa.
        grad_correction: add the rejection sampler's gradient-correction term to the surrogates of
            :meth:`rsample`'s draws (the unbiased gradient in kappa; Davidson et al.'s g_cor).
        prior, prior_components, kl: see :class:`SphericalLatent`.
    """

    family = VonMisesFisher

    def __init__(self, dim: int, min_concentration: float = 1.0, grad_correction: bool = False,
                 prior: str = "uniform", prior_components: int = 10, kl: str = "auto"):
        super().__init__(dim, min_concentration, prior, prior_components, kl)
        self.grad_correction = grad_correction

    def rsample(self, q: Distribution, sample_shape: torch.Size | tuple = torch.Size()) -> PosteriorSample:
        if not self.grad_correction:
            return super().rsample(q, sample_shape)
        return PosteriorSample(*q.rsample_with_correction(torch.Size(sample_shape)))


class SphericalCauchyLatent(SphericalLatent):
    """q(z|x) = spCauchy(mu, rho), p(z) = uniform on S^d (Sablica and Hornik, 2025) or a learnt prior.

    rho = max_rho * sigmoid(s) keeps rho in [0, 1); ``max_rho`` bounds the concentration so that
    float32 training never reaches rho = 1 exactly. ``prior``, ``prior_components``, ``kl``: see
    :class:`SphericalLatent`.
    """

    def __init__(self, dim: int, max_rho: float = 1.0 - 1e-6, prior: str = "uniform", prior_components: int = 10,
                 kl: str = "auto"):
        super().__init__(dim, prior, prior_components, kl)
        if not 0.0 < max_rho < 1.0:
            raise ValueError(f"max_rho must lie in (0, 1), got {max_rho}")
        self.max_rho = max_rho
        self._choose_kl_estimator()

    def posterior(self, raw: torch.Tensor) -> SphericalCauchy:
        loc, s = self.split(raw)
        return SphericalCauchy(loc, self.max_rho * torch.sigmoid(s))


class PowerSphericalLatent(_SoftplusConcentration):
    """q(z|x) = PowerSpherical(mu, kappa), p(z) = uniform on S^d (De Cao and Aziz, 2020) or a learnt prior.

    kappa = softplus(s) + ``min_concentration`` (1 in the authors' example). ``prior``, ``prior_components``,
    ``kl``: see :class:`SphericalLatent`.
    """

    family = PowerSpherical
