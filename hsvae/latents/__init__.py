"""Latent families: what turns encoder outputs into a posterior, a prior and a KL.

``dim`` is always the intrinsic dimension d: Gaussian latents live in R^d, spherical ones on S^d
in R^(d+1).
"""

from .base import LatentFamily, PosteriorSample
from .gaussian import DeterministicLatent, GaussianLatent, PointMass
from .product import ProductSphereLatent
from .spherical import (
    PowerSphericalLatent,
    SphericalCauchyLatent,
    SphericalLatent,
    VonMisesFisherLatent,
)

__all__ = [
    "DeterministicLatent",
    "PointMass",
    "PosteriorSample",
    "GaussianLatent",
    "LatentFamily",
    "PowerSphericalLatent",
    "ProductSphereLatent",
    "SphericalCauchyLatent",
    "SphericalLatent",
    "VonMisesFisherLatent",
]
