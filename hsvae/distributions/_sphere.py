"""Geometry shared by the spherical distributions.

Dimension convention (the same in every module of this package): a spherical
distribution lives on the unit sphere S^(m-1) in R^m, and ``m`` -- the *ambient*
dimension -- is the size of the last axis of ``loc``.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import constraints


def log_sphere_surface(m: int) -> float:
    """log |S^(m-1)| = log(2) + (m/2) log(pi) - lgamma(m/2), the area of the unit sphere in R^m."""
    return math.log(2.0) + 0.5 * m * math.log(math.pi) - math.lgamma(0.5 * m)


def sample_uniform_sphere(shape: torch.Size, m: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Uniform samples on S^(m-1), shape ``shape + (m,)``: normalised standard normals."""
    x = torch.randn(*shape, m, dtype=dtype, device=device)
    # A normal vector of exactly zero norm has probability zero; clamp for safety in float16/32.
    return x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)


class _UnitVector(constraints.Constraint):
    """Vectors of unit Euclidean norm along the last axis (within a tolerance)."""

    event_dim = 1

    def __init__(self, atol: float = 1e-4):
        self.atol = atol

    def check(self, value: torch.Tensor) -> torch.Tensor:
        norm = value.norm(dim=-1)
        return (norm - 1.0).abs() <= self.atol

    def __repr__(self) -> str:
        return f"unit_vector(atol={self.atol})"


#: The unit sphere S^(m-1), as a support/argument constraint.
unit_vector = _UnitVector()


def check_ambient_dim(m: int) -> int:
    """Validate the ambient dimension m (the sphere S^(m-1) needs m >= 2)."""
    if not isinstance(m, int) or m < 2:
        raise ValueError(
            f"ambient dimension m must be an integer >= 2 (the sphere S^(m-1) in R^m), got m={m!r}"
        )
    return m
