"""Latent distributions as ``torch.distributions``.

Dimension convention, everywhere in this package: spherical distributions live on the unit
sphere S^(m-1) in R^m and take the *ambient* dimension m as the last axis of ``loc``
(``batch_shape == loc.shape[:-1]``, ``event_shape == (m,)``). A latent of intrinsic
dimension d on the sphere S^d therefore uses m = d + 1 coordinates. The Gaussian lives in R^d.

Usable on their own::

    from hsvae.distributions import VonMisesFisher, HypersphericalUniform
    q = VonMisesFisher(loc, kappa)          # loc: (..., m) unit vectors, kappa: (..., 1) or (...)
    kl = torch.distributions.kl_divergence(q, HypersphericalUniform(m))

The three spherical families subclass :class:`SphericalDistribution` (broadcasting, validation, ``expand``,
``entropy`` and the KL to the uniform from the family's ``kl_to_uniform``); each exposes its concentration
parameter under its own name (``concentration`` for kappa, ``rho``) beside torch's ``scale``. The KLs between
the families, where closed forms exist, are registered in :mod:`hsvae.distributions.kl`.
"""

from ._spherical_utils import SphericalDistribution
from .gaussian import DiagonalNormal, StandardNormal
from .power_spherical import PowerSpherical
from .product import ProductOfSpheres
from .spherical_cauchy import SphericalCauchy
from .uniform import HypersphericalUniform
from .von_mises_fisher import VonMisesFisher
from .kl import MonteCarloKL, monte_carlo_kl  # (registers the KLs between the families)

__all__ = [
    "DiagonalNormal",
    "HypersphericalUniform",
    "MonteCarloKL",
    "PowerSpherical",
    "ProductOfSpheres",
    "SphericalCauchy",
    "SphericalDistribution",
    "StandardNormal",
    "VonMisesFisher",
    "monte_carlo_kl",
]
