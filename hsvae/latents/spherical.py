"""Spherical latent families on S^d in R^(d+1): vMF (the S-VAE), spherical Cauchy, Power Spherical.

All three share the parameterisation of the direction (the first d + 1 raw outputs, normalised to a
unit vector) and differ in the one concentration parameter and its constraint. Their prior is the uniform
on the sphere, or (``prior="vmf"``) a vMF whose direction and concentration are learnt with the model; the KL
of every family to a vMF has a closed form (:mod:`hsvae.distributions.kl`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher

from .base import LatentFamily, PosteriorSample


#: the priors a spherical latent can have
PRIORS = ("uniform", "vmf")
#: the learnt vMF prior's concentration starts at softplus(this) ~ 0.018: nearly the uniform, so that training
#: starts from the KL the uniform prior would give
_INITIAL_PRIOR_CONCENTRATION_RAW = -4.0


class SphericalLatent(LatentFamily):
    """Common part: ``raw[..., :d+1]`` -> unit direction, ``raw[..., d+1]`` -> concentration; the prior.

    Args:
        dim: intrinsic dimension d (samples live in R^(d+1)).
        prior: ``"uniform"`` on S^d, or ``"vmf"``: a vMF prior whose direction and concentration are parameters
            of this module (learnt with the model; initialised near the uniform).
    """

    spherical = True

    def __init__(self, dim: int, prior: str = "uniform"):
        super().__init__(dim)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        self.prior_kind = prior
        if prior == "vmf":
            self.prior_direction = nn.Parameter(F.one_hot(torch.tensor(0), self.dim + 1).float())
            self.prior_concentration_raw = nn.Parameter(torch.tensor(_INITIAL_PRIOR_CONCENTRATION_RAW))

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
        direction, s = raw[..., : self.event_size], raw[..., self.event_size]
        # clamp_min: an all-zero direction output would otherwise give 0/0.
        loc = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)
        return loc, s

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> HypersphericalUniform | VonMisesFisher:
        if self.prior_kind == "uniform":
            return HypersphericalUniform(self.event_size, dtype=dtype, device=device)
        loc = F.normalize(self.prior_direction, dim=0).to(device=device, dtype=dtype)
        kappa = (F.softplus(self.prior_concentration_raw) + 1e-6).to(device=device, dtype=dtype)
        return VonMisesFisher(loc, kappa)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", prior={self.prior_kind}" if self.prior_kind != "uniform" else "")


class VonMisesFisherLatent(SphericalLatent):
    """q(z|x) = vMF(mu, kappa), p(z) = uniform on S^d (Davidson et al., 2018) or a learnt vMF (``prior``).

    kappa = softplus(s) + ``min_concentration``; the S-VAE authors' code uses 1, which keeps the
    posterior away from the uniform where the KL collapses.

    Args:
        dim: intrinsic dimension d (samples live in R^(d+1)).
        min_concentration: lower bound of kappa.
        grad_correction: add the rejection sampler's gradient-correction term to the surrogates of
            :meth:`rsample`'s draws (the unbiased gradient in kappa; Davidson et al.'s g_cor).
        prior: see :class:`SphericalLatent`.
    """

    def __init__(self, dim: int, min_concentration: float = 1.0, grad_correction: bool = False,
                 prior: str = "uniform"):
        super().__init__(dim, prior)
        if min_concentration < 0:
            raise ValueError(f"min_concentration must be >= 0, got {min_concentration}")
        self.min_concentration = min_concentration
        self.grad_correction = grad_correction

    def posterior(self, raw: torch.Tensor) -> VonMisesFisher:
        loc, s = self.split(raw)
        return VonMisesFisher(loc, F.softplus(s) + self.min_concentration)

    def rsample(self, q: Distribution, sample_shape: torch.Size | tuple = torch.Size()) -> PosteriorSample:
        if not self.grad_correction:
            return super().rsample(q, sample_shape)
        return PosteriorSample(*q.rsample_with_correction(torch.Size(sample_shape)))


class SphericalCauchyLatent(SphericalLatent):
    """q(z|x) = spCauchy(mu, rho), p(z) = uniform on S^d (Sablica and Hornik, 2025).

    rho = max_rho * sigmoid(s) keeps rho in [0, 1); ``max_rho`` bounds the concentration so that
    float32 training never reaches rho = 1 exactly.
    """

    def __init__(self, dim: int, max_rho: float = 1.0 - 1e-6, prior: str = "uniform"):
        super().__init__(dim, prior)
        if not 0.0 < max_rho < 1.0:
            raise ValueError(f"max_rho must lie in (0, 1), got {max_rho}")
        self.max_rho = max_rho

    def posterior(self, raw: torch.Tensor) -> SphericalCauchy:
        loc, s = self.split(raw)
        return SphericalCauchy(loc, self.max_rho * torch.sigmoid(s))


class PowerSphericalLatent(SphericalLatent):
    """q(z|x) = PowerSpherical(mu, kappa), p(z) = uniform on S^d (De Cao and Aziz, 2020).

    kappa = softplus(s) + ``min_concentration`` (1 in the authors' example).
    """

    def __init__(self, dim: int, min_concentration: float = 1.0, prior: str = "uniform"):
        super().__init__(dim, prior)
        if min_concentration < 0:
            raise ValueError(f"min_concentration must be >= 0, got {min_concentration}")
        self.min_concentration = min_concentration

    def posterior(self, raw: torch.Tensor) -> PowerSpherical:
        loc, s = self.split(raw)
        return PowerSpherical(loc, F.softplus(s) + self.min_concentration)

