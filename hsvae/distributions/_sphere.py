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


def tangent_sample(w: torch.Tensor, m: int) -> torch.Tensor:
    """Points x = (w, sqrt(1 - w^2) v) on S^(m-1) with v uniform on S^(m-2).

    ``w`` has shape ``S``; the result has shape ``S + (m,)`` and is centred on e1 = (1, 0, ..., 0).
    """
    v = sample_uniform_sphere(w.shape, m - 1, dtype=w.dtype, device=w.device)
    # clamp: w may round to +-1 exactly, and sqrt'(0) is infinite.
    radial = (1.0 - w * w).clamp_min(torch.finfo(w.dtype).tiny).sqrt()
    return torch.cat([w.unsqueeze(-1), radial.unsqueeze(-1) * v], dim=-1)


def householder_rotate(x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Reflect points centred on e1 so that they are centred on ``loc``.

    The Householder reflection H = I - 2 u u^T / (u^T u) with u = e1 - loc maps e1 to loc.
    When loc = e1 (u = 0) the reflection is the identity; the ``where`` keeps that case
    (and its gradient) finite.
    """
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1.0
    u = e1 - loc
    uu = (u * u).sum(-1, keepdim=True)
    safe = uu > torch.finfo(loc.dtype).eps
    coef = torch.where(safe, 2.0 / torch.where(safe, uu, torch.ones_like(uu)), torch.zeros_like(uu))
    return x - coef * (x * u).sum(-1, keepdim=True) * u


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
#: The half-open interval [0, 1), for the spherical Cauchy's rho.
unit_interval_half_open = constraints.half_open_interval(0.0, 1.0)


def check_ambient_dim(m: int) -> int:
    """Validate the ambient dimension m (the sphere S^(m-1) needs m >= 2)."""
    if not isinstance(m, int) or m < 2:
        raise ValueError(
            f"ambient dimension m must be an integer >= 2 (the sphere S^(m-1) in R^m), got m={m!r}"
        )
    return m
