"""Independent distributions on a product of spheres S^(m_1 - 1) x ... x S^(m_K - 1), concatenated.

Dimension convention (as everywhere in this package): factor i lives on S^(m_i - 1) in R^(m_i); a sample
concatenates the factors' coordinates along the last axis, so ``event_shape == (m_1 + ... + m_K,)`` and each
block of m_i coordinates is a unit vector. The factors share one batch shape.

Davidson et al. (2019), "Increasing the expressivity of a hyperspherical VAE": a product of low-dimensional
spheres, each with its own concentration, instead of one concentration for all directions of S^d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution, constraints, kl_divergence, register_kl


class _UnitBlocks(constraints.Constraint):
    """Concatenated unit vectors of the given sizes along the last axis (within the sphere's tolerance)."""

    event_dim = 1

    def __init__(self, sizes: Sequence[int], atol: float = 1e-4):
        self.sizes, self.atol = tuple(sizes), atol

    def check(self, value: torch.Tensor) -> torch.Tensor:
        norms = torch.stack([b.norm(dim=-1) for b in value.split(self.sizes, dim=-1)], -1)
        return ((norms - 1.0).abs() <= self.atol).all(-1)


class ProductOfSpheres(Distribution):
    """The product of independent factor distributions, each on its own sphere (a spherical family or the
    uniform), with the factors' coordinates concatenated.

    Args:
        factors: the factor distributions, each with ``event_shape == (m_i,)`` and one common ``batch_shape``.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, factors: Sequence[Distribution], validate_args: bool | None = None):
        factors = list(factors)
        if not factors:
            raise ValueError("factors must hold at least one distribution")
        if any(len(f.event_shape) != 1 for f in factors):
            raise ValueError(f"every factor must have one event axis (its sphere's coordinates), got "
                             f"{[tuple(f.event_shape) for f in factors]}")
        batch_shape = factors[0].batch_shape
        if any(f.batch_shape != batch_shape for f in factors):
            raise ValueError(f"the factors' batch shapes differ: {[tuple(f.batch_shape) for f in factors]}")
        self.factors = factors
        self.sizes = tuple(int(f.event_shape[0]) for f in factors)
        super().__init__(batch_shape, torch.Size([sum(self.sizes)]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return _UnitBlocks(self.sizes)

    def expand(self, batch_shape, _instance=None):
        return ProductOfSpheres([f.expand(batch_shape) for f in self.factors], validate_args=False)

    def split(self, value: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The factors' blocks of a sample (views)."""
        return value.split(self.sizes, dim=-1)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        return torch.cat([f.rsample(sample_shape) for f in self.factors], dim=-1)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([f.sample(sample_shape) for f in self.factors], dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return sum(f.log_prob(block) for f, block in zip(self.factors, self.split(value)))

    def entropy(self) -> torch.Tensor:
        return sum(f.entropy() for f in self.factors)

    @property
    def mean(self) -> torch.Tensor:
        return torch.cat([f.mean for f in self.factors], dim=-1)

    @property
    def loc(self) -> torch.Tensor:
        """The factors' mean directions, concatenated (the point a latent embeds by)."""
        return torch.cat([f.loc for f in self.factors], dim=-1)

    def __repr__(self) -> str:
        return f"ProductOfSpheres(sizes={self.sizes}, batch_shape={tuple(self.batch_shape)})"


@register_kl(ProductOfSpheres, ProductOfSpheres)
def _kl_product(q: ProductOfSpheres, p: ProductOfSpheres) -> torch.Tensor:
    """The sum of the factors' KLs (independent factors); each factor pair needs its own closed form."""
    if q.sizes != p.sizes:
        raise ValueError(f"KL between products of spheres of different factors: {q.sizes} vs {p.sizes}")
    return sum(kl_divergence(fq, fp) for fq, fp in zip(q.factors, p.factors))
