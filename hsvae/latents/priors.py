"""Priors as a choice: the fixed priors of the papers and priors whose parameters are learnt with the model.

A prior module holds the learnt parameters (none for the fixed priors) and builds the prior distribution on a
device and dtype; the latent family owns it, so the parameters train, move and checkpoint with the model.

* On the sphere S^d (``m = d + 1`` coordinates): ``uniform`` (the S-VAE's); ``vmf`` and ``power_spherical``
  (a direction and a concentration, initialised near the uniform so that training starts from the uniform's
  KL); ``mixture``: a mixture of K vMFs with learnt directions, concentrations and weights
  (``MixtureSameFamily``, whose log-density is a log-sum-exp over the components).
* In R^d: ``standard`` N(0, I); ``learned_diagonal`` N(m, diag s^2) (initialised at N(0, I)); ``mixture`` of K
  diagonal normals with learnt means, scales and weights.

The KL to a vMF prior has a closed form for every spherical posterior (:mod:`hsvae.distributions.kl`), as the
KL between diagonal normals; the mixtures and the Power Spherical prior (for a non-uniform posterior) have
none: their KL is estimated by Monte Carlo (see :class:`~hsvae.latents.base.LatentFamily`'s ``kl``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily
from torch.nn import functional as F

from hsvae.distributions import (
    DiagonalNormal,
    HypersphericalUniform,
    PowerSpherical,
    StandardNormal,
    VonMisesFisher,
)

#: the priors of the spherical latents, and of the Gaussian one
SPHERICAL_PRIORS = ("uniform", "vmf", "power_spherical", "mixture")
GAUSSIAN_PRIORS = ("standard", "learned_diagonal", "mixture")

#: a learnt vMF or Power Spherical prior starts at concentration softplus(-4) ~ 0.018: nearly the uniform
_NEAR_UNIFORM_CONCENTRATION_RAW = -4.0
#: softplus^-1(1): a learnt scale starts at 1
_UNIT_SCALE_RAW = math.log(math.e - 1.0)


class _Prior(nn.Module):
    """What both priors share: the choice (checked once) and the mixture's weights."""

    #: the kinds this prior takes
    kinds: tuple[str, ...] = ()

    def __init__(self, kind: str, components: int, space: str):
        super().__init__()
        if kind not in self.kinds:
            raise ValueError(f"prior must be one of {self.kinds} for a latent in {space}, got {kind!r}")
        if kind == "mixture":
            if isinstance(components, bool) or not isinstance(components, int) or components < 1:
                raise ValueError(f"prior_components must be an integer >= 1 (the mixture's number of components), "
                                 f"got {components!r}")
            self.logits = nn.Parameter(torch.zeros(components))  # equal weights to start
        self.kind = kind
        self.components = components if kind == "mixture" else None

    def _mixed(self, component: Distribution, device: torch.device, dtype: torch.dtype) -> Distribution:
        """The mixture of ``component``'s batch (one member per component) under the learnt weights; for the
        other kinds, ``component`` itself."""
        if self.kind != "mixture":
            return component
        return MixtureSameFamily(Categorical(logits=self.logits.to(device=device, dtype=dtype)), component)

    def extra_repr(self) -> str:
        return self.kind + (f", components={self.components}" if self.components else "")


class SphericalPrior(_Prior):
    """The prior of a spherical latent on S^(m-1), ``m`` ambient (see the module docstring for the kinds).

    Args:
        kind: one of :data:`SPHERICAL_PRIORS`.
        m: ambient dimension (d + 1).
        components: the mixture's K (used by ``kind="mixture"`` only).
    """

    kinds = SPHERICAL_PRIORS

    def __init__(self, kind: str, m: int, components: int = 10):
        super().__init__(kind, components, f"S^{m - 1}")
        self.m = m
        if kind in ("vmf", "power_spherical"):
            self.direction = nn.Parameter(F.one_hot(torch.tensor(0), m).float())
            self.concentration_raw = nn.Parameter(torch.tensor(_NEAR_UNIFORM_CONCENTRATION_RAW))
        elif kind == "mixture":
            # spread directions (drawn with the global seed), moderate concentrations
            self.direction = nn.Parameter(F.normalize(torch.randn(components, m), dim=-1))
            self.concentration_raw = nn.Parameter(torch.zeros(components))

    def distribution(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        if self.kind == "uniform":
            return HypersphericalUniform(self.m, dtype=dtype, device=device)
        loc = F.normalize(self.direction, dim=-1).to(device=device, dtype=dtype)
        concentration = (F.softplus(self.concentration_raw) + 1e-6).to(device=device, dtype=dtype)
        family = PowerSpherical if self.kind == "power_spherical" else VonMisesFisher
        return self._mixed(family(loc, concentration), device, dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


class GaussianPrior(_Prior):
    """The prior of a Gaussian latent in R^d (see the module docstring for the kinds).

    Args:
        kind: one of :data:`GAUSSIAN_PRIORS`.
        d: the dimension.
        components: the mixture's K (used by ``kind="mixture"`` only).
    """

    kinds = GAUSSIAN_PRIORS

    def __init__(self, kind: str, d: int, components: int = 10):
        super().__init__(kind, components, f"R^{d}")
        self.d = d
        if kind != "standard":
            shape = (components, d) if kind == "mixture" else (d,)
            # a mixture's means spread as N(0, I) draws (the global seed); a single learnt prior starts at N(0, I)
            self.loc = nn.Parameter(torch.randn(shape) if kind == "mixture" else torch.zeros(shape))
            self.scale_raw = nn.Parameter(torch.full(shape, _UNIT_SCALE_RAW))

    def distribution(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        if self.kind == "standard":
            return StandardNormal(self.d, dtype=dtype, device=device)
        loc = self.loc.to(device=device, dtype=dtype)
        scale = (F.softplus(self.scale_raw) + 1e-4).to(device=device, dtype=dtype)
        return self._mixed(DiagonalNormal(loc, scale), device, dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, d={self.d}"
