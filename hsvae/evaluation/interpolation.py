"""Paths between latent points: the geodesic (slerp) on the sphere, the straight line in R^d.

Dimension convention: points on the sphere S^(m-1) are unit vectors of R^m, m the size of the last axis
(a spherical latent of intrinsic dimension d has m = d + 1); Euclidean points live in R^d. Both functions
take two points of shape ``(..., m)`` and a tensor ``t`` of ``T`` fractions in [0, 1], and return the path
of shape ``(T, ..., m)``: ``path[0] == a`` and ``path[-1] == b``.
"""

from __future__ import annotations

import torch

from hsvae.utils.modules import evaluating

#: allowed deviation of |a| and |b| from 1 (float32 encoders normalise to about 1e-7)
UNIT_TOLERANCE = 1e-4


def _check_pair(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if a.shape != b.shape:
        raise ValueError(f"the end points must have the same shape, got a: {tuple(a.shape)} and b: {tuple(b.shape)}")
    if a.dim() < 1 or a.shape[-1] < 1:
        raise ValueError(f"the end points need a last axis of coordinates, got shape {tuple(a.shape)}")
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of fractions in [0, 1], got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ValueError(f"t must lie in [0, 1], got values in [{t.min().item()}, {t.max().item()}]")
    return t


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The straight path ``(1 - t) a + t b`` in R^d (Gaussian latents), shape ``(T, ...)``."""
    t = _check_pair(a, b, t)
    shape = (-1,) + (1,) * a.dim()
    return torch.lerp(a.unsqueeze(0), b.unsqueeze(0), t.reshape(shape))


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The great-circle path from ``a`` to ``b`` on S^(m-1), at constant angular speed, shape ``(T, ..., m)``.

    With omega the angle between a and b and u the unit tangent at a pointing to b,
    ``path(t) = cos(t omega) a + sin(t omega) u``. This tangent form is used instead of the textbook
    ``[sin((1-t) omega) a + sin(t omega) b] / sin(omega)``, which divides by ~0 for nearly equal points; omega
    comes from ``atan2(|b - (a.b) a|, a.b)``, accurate at every angle (arccos loses digits near 0 and pi).
    Antipodal points have no unique geodesic: the path then goes through a fixed direction orthogonal to
    ``a`` (the coordinate axis least aligned with it). Each point is renormalised against rounding.

    Raises:
        ValueError: shapes differ, ``t`` leaves [0, 1], or a point is not a unit vector.
    """
    t = _check_pair(a, b, t)
    for name, p in (("a", a), ("b", b)):
        deviation = (p.norm(dim=-1) - 1).abs().max().item()
        if not deviation <= UNIT_TOLERANCE:
            raise ValueError(f"slerp: {name} must be unit vectors (points on the sphere); |{name}| deviates from 1 by {deviation:.3g}")
    dot = (a * b).sum(-1, keepdim=True)
    tangent = b - dot * a
    # A second Gram-Schmidt pass: for nearly antipodal points the first leaves rounding noise as large as the
    # tangent itself, whose direction would then not be orthogonal to a (the path would leave the great circle).
    tangent = tangent - (tangent * a).sum(-1, keepdim=True) * a
    sin_norm = tangent.norm(dim=-1, keepdim=True)
    omega = torch.atan2(sin_norm, dot)
    tiny = torch.finfo(a.dtype).eps
    antipodal = (sin_norm <= tiny) & (dot < 0)
    if antipodal.any():
        # the coordinate axis least aligned with a, made orthogonal to it
        axis = torch.nn.functional.one_hot(a.abs().argmin(-1), a.shape[-1]).to(a.dtype)
        fallback = axis - (axis * a).sum(-1, keepdim=True) * a
        tangent = torch.where(antipodal, fallback, tangent)
        sin_norm = tangent.norm(dim=-1, keepdim=True)
    # nearly equal points: the tangent has no direction, but sin(t omega) ~ 0 multiplies it
    unit_tangent = tangent / sin_norm.clamp_min(tiny)
    angle = t.reshape((-1,) + (1,) * a.dim()) * omega.unsqueeze(0)
    path = torch.cos(angle) * a.unsqueeze(0) + torch.sin(angle) * unit_tangent.unsqueeze(0)
    return path / path.norm(dim=-1, keepdim=True)


def latent_path(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool) -> torch.Tensor:
    """``steps`` evenly spaced points from ``a`` to ``b``: slerp on the sphere, the straight line otherwise."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ValueError(f"steps (points on the path, end points included) must be an integer >= 2, got {steps!r}")
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device)
    return slerp(a, b, t) if spherical else lerp(a, b, t)


@torch.no_grad()
def decode_interpolations(net, x_start: torch.Tensor, x_end: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Decoded paths between the latent means of ``x_start[i]`` and ``x_end[i]`` for a :class:`~hsvae.models.VAE`.

    The end points are the posterior locations (``net.embed``); the path is the geodesic for a spherical
    latent and the straight line otherwise; each point is decoded to the likelihood's mean (pixel
    probabilities for a Bernoulli likelihood).

    Returns:
        ``(P, steps, *x.shape[1:])``: row i is the path of pair i, its first and last entries the
        reconstructions of the two end points.
    """
    if x_start.shape != x_end.shape:
        raise ValueError(f"x_start and x_end must have the same shape, got {tuple(x_start.shape)} and {tuple(x_end.shape)}")
    with evaluating(net):
        a, b = net.embed(x_start), net.embed(x_end)
        blocks = net.latent.spheres  # slerp on each sphere of the latent, straight lines in R^d
        if blocks:
            path = torch.cat([latent_path(ai, bi, steps, spherical=True)
                              for ai, bi in zip(a.split(blocks, dim=-1), b.split(blocks, dim=-1))], dim=-1)
        else:
            path = latent_path(a, b, steps, spherical=False)  # (steps, P, event)
        images = net.likelihood.mean(net.decode(path))  # (steps, P, prod(image))
    return images.transpose(0, 1).reshape(x_start.shape[0], steps, *x_start.shape[1:])
