"""A latent on a product of spheres S^(d_1) x ... x S^(d_K) (Davidson et al., 2019): each factor its own posterior
of a spherical family, with its own concentration, and the uniform prior per factor; the KL is the factors' sum.

Dimension convention: ``dim`` is the intrinsic dimension d = d_1 + ... + d_K; a sample concatenates the factors'
coordinates, d_i + 1 each, so ``event_size == d + K``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from hsvae.distributions.product import ProductOfSpheres

from .base import LatentFamily, PosteriorSample
from .spherical import SphericalLatent, VonMisesFisherLatent


class ProductSphereLatent(LatentFamily):
    """z = (z_1, ..., z_K), z_i on S^(d_i) in R^(d_i + 1), independent given x.

    Not ``spherical`` (z is not one unit vector); its unit blocks are :attr:`spheres`, which the k-NN's cosine
    distance, the interpolation (slerp per factor) and the VGAE's scale follow.

    Args:
        dim: the intrinsic dimension d, the sum of ``factors``.
        factors: the factors' intrinsic dimensions d_i (each >= 1); None: ``dim`` circles (``[1] * dim``).
        factor: builds one factor's latent family from its intrinsic dimension (``factor(dim=d_i)``; e.g. a
            partial of :class:`~hsvae.latents.VonMisesFisherLatent`, the default, or of the spherical Cauchy's).
        kl: see :class:`~hsvae.latents.base.LatentFamily` (the closed form is the sum of the factors').
    """

    def __init__(self, dim: int, factors: Sequence[int] | None = None,
                 factor: Callable[..., SphericalLatent] = VonMisesFisherLatent, kl: str = "auto"):
        super().__init__(dim, kl)
        factors = [1] * dim if factors is None else list(factors)
        if not factors or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in factors):
            raise ValueError(f"factors must be intrinsic dimensions >= 1 (e.g. [1, 1, 1] or [4, 4]), got {factors!r}")
        if sum(factors) != dim:
            raise ValueError(f"factors {factors} sum to {sum(factors)}, but dim (the intrinsic dimension) is {dim}: "
                             f"set dim to {sum(factors)} or change the factors")
        self.factors = nn.ModuleList(factor(dim=d) for d in factors)
        if not all(isinstance(f, SphericalLatent) for f in self.factors):
            raise ValueError(f"factor must build a spherical latent family, got {type(self.factors[0]).__name__}")
        self._raw_sizes = [f.raw_size for f in self.factors]
        self._choose_kl_estimator()

    @property
    def event_size(self) -> int:
        return sum(f.event_size for f in self.factors)

    @property
    def raw_size(self) -> int:
        return sum(self._raw_sizes)

    @property
    def spheres(self) -> tuple[int, ...]:
        return tuple(f.event_size for f in self.factors)

    def posterior(self, raw: torch.Tensor) -> ProductOfSpheres:
        return ProductOfSpheres([f.posterior(r) for f, r in zip(self.factors, raw.split(self._raw_sizes, dim=-1))])

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> ProductOfSpheres:
        return ProductOfSpheres([f.make_prior(device, dtype) for f in self.factors])

    def rsample(self, q: ProductOfSpheres, sample_shape: torch.Size | tuple = torch.Size()) -> PosteriorSample:
        """Each factor drawn by its own family (with its gradient estimator); the score terms of independent
        factors add up."""
        draws = [f.rsample(qf, sample_shape) for f, qf in zip(self.factors, q.factors)]
        scores = [d.score for d in draws if d.score is not None]
        return PosteriorSample(torch.cat([d.z for d in draws], dim=-1), sum(scores) if scores else None)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, factors={[f.dim for f in self.factors]}, event_size={self.event_size}"
