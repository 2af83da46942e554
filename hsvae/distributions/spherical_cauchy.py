"""The spherical Cauchy distribution of Kato and McCullagh (2020).

Dimension convention (as everywhere in this package): the distribution lives on the unit
sphere S^(m-1) in R^m; ``m`` -- the *ambient* dimension -- is the size of the last axis of
``loc``; ``batch_shape == loc.shape[:-1]`` and ``event_shape == (m,)``.

Density with respect to the surface measure, for a unit vector ``mu`` and ``rho`` in [0, 1):

    f(x) = |S^(m-1)|^(-1) * ((1 - rho^2) / (1 + rho^2 - 2 rho mu.x))^(m-1).

Sampling is the Moebius map of a uniform point u (no rejection, every step differentiable):

    x = (1 - rho^2) (u + rho mu) / |u + rho mu|^2 + rho mu.

The KL divergence to the uniform distribution has no elementary closed form for general m.
The Moebius map gives (1 + rho^2 - 2 rho mu.x) |u + rho mu|^2 = (1 - rho^2)^2, hence, with
s = mu.u (whose density is proportional to (1 - s^2)^((m-3)/2)) and folding s -> -s
(q = s^2 ~ Beta(1/2, (m-1)/2)),

    KL / (m - 1) = E_u[log(|u + rho mu|^2 / (1 - rho^2))]
                 = log((1 + rho^2) / (1 - rho^2)) + 1/2 E_q[log(1 - z q)],   z = 4 rho^2 / (1 + rho^2)^2.

This is a smooth one-dimensional expectation under a Beta law, evaluated with a fixed
Gauss-Jacobi rule (nodes cached per m, dtype and device). Every term is O(rho^2) near rho = 0
(no cancellation) and the rule stays accurate up to rho -> 1 for m >= 5 (the log singularity
at q = 1/z is damped by the weight (1 - q)^((m-3)/2)). For m = 2, 3, 4 the expectation has an
exact closed form, which is used instead.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.distributions import Distribution, register_kl

from ._sphere import check_ambient_dim, log_sphere_surface, sample_uniform_sphere, unit_vector
from .uniform import HypersphericalUniform

__all__ = ["SphericalCauchy", "spherical_cauchy_kl_to_uniform", "spherical_cauchy_mean_resultant"]

_UNIT_NORM_ATOL = unit_vector.atol


# ----------------------------------------------------------------------------------------------
# Parameter handling shared with the Power Spherical distribution.
# ----------------------------------------------------------------------------------------------


def broadcast_loc_and_scale(
    loc: torch.Tensor, scale: torch.Tensor | float, family: str, scale_name: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return ``(loc, scale, m)`` broadcast to a common batch shape.

    ``loc`` has shape ``batch_shape + (m,)``; ``scale`` broadcasts against ``batch_shape``.
    A trailing singleton axis on ``scale`` (``scale.shape == loc.shape[:-1] + (1,)``, the
    convention of the S-VAE authors' code) is squeezed, so a (B, 1) scale with a (B, m) loc
    gives ``batch_shape == (B,)``.
    """
    if not isinstance(loc, torch.Tensor):
        loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
    if not loc.is_floating_point():
        raise ValueError(f"{family}: loc must be a floating-point tensor, got dtype {loc.dtype}")
    if loc.dim() < 1:
        raise ValueError(f"{family}: loc must have a last axis of size m (the ambient dimension), got a scalar")
    m = loc.shape[-1]
    try:
        check_ambient_dim(m)
    except ValueError as err:
        raise ValueError(f"{family}: loc has last axis of size {m}; {err}") from None
    scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
    if scale.dim() == loc.dim() and scale.shape[-1] == 1:
        scale = scale.squeeze(-1)
    try:
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape)
    except RuntimeError:
        raise ValueError(
            f"{family}: {scale_name} of shape {tuple(scale.shape)} does not broadcast against the batch "
            f"shape {tuple(loc.shape[:-1])} of loc (shape {tuple(loc.shape)}); expected a shape "
            f"broadcastable to {tuple(loc.shape[:-1])}, optionally with a trailing axis of size 1"
        ) from None
    if loc.shape[:-1] != batch_shape:
        loc = loc.expand(batch_shape + (m,))
    if scale.shape != batch_shape:
        scale = scale.expand(batch_shape)
    return loc, scale, m


def check_unit_loc(loc: torch.Tensor, family: str) -> None:
    """ValueError unless every ``loc`` vector has unit norm (within the support's tolerance)."""
    if not bool(unit_vector.check(loc).all()):
        bad = (loc.norm(dim=-1) - 1.0).abs().max().item()
        raise ValueError(
            f"{family}: loc must be unit vectors along its last axis (|loc| = 1 within "
            f"{_UNIT_NORM_ATOL:g}); the largest deviation of |loc| from 1 is {bad:.3g}"
        )


# ----------------------------------------------------------------------------------------------
# Gauss-Jacobi rule for q ~ Beta(1/2, b).
# ----------------------------------------------------------------------------------------------


def _num_nodes(m: int) -> int:
    """Nodes of the Gauss-Jacobi rule; chosen so that the KL's relative error is <= ~1e-7 in
    float64 over rho in [0, 1) (measured against mpmath; see tests/distributions/test_spherical_cauchy.py).
    The larger m, the more the weight damps the log singularity near q = 1 and the fewer nodes."""
    if m < 10:
        return 40
    if m < 20:
        return 16
    return 12


@functools.lru_cache(maxsize=64)
def _beta_half_rule(m: int, n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes q_i and probability weights p_i of the n-point Gauss rule for q ~ Beta(1/2, (m-1)/2).

    Golub-Welsch on the Jacobi matrix of the Jacobi polynomials with weight
    (1 - x)^alpha (1 + x)^beta on [-1, 1], alpha = (m-3)/2, beta = -1/2, and q = (1 + x)/2.
    Built once in float64 on the CPU and cached per (m, n, dtype, device).
    Returns ``-q`` (as used by ``log1p(-z q)``) and ``p / 2`` (the 1/2 of the KL formula).
    """
    a, b = 0.5 * (m - 3), -0.5
    k = torch.arange(n, dtype=torch.float64)
    s = 2.0 * k + a + b
    diag = (b * b - a * a) / (s * (s + 2.0))
    diag[0] = (b - a) / (a + b + 2.0)  # the general formula is 0/0 at k = 0 when a + b = 0
    j = k[1:]
    sj = 2.0 * j + a + b
    off2 = 4.0 * j * (j + a) * (j + b) * (j + a + b) / (sj * sj * (sj + 1.0) * (sj - 1.0))
    # at j = 1 the factor (j + a + b) / (sj - 1) is 0/0 when a + b = -1 (m = 2); it equals 1.
    off2[0] = 4.0 * (1.0 + a) * (1.0 + b) / ((2.0 + a + b) ** 2 * (3.0 + a + b))
    jacobi = torch.diag(diag) + torch.diag(off2.sqrt(), 1) + torch.diag(off2.sqrt(), -1)
    x, vectors = torch.linalg.eigh(jacobi)
    q = (0.5 * (1.0 + x)).clamp(0.0, 1.0)
    p = vectors[0] ** 2
    p = p / p.sum()
    return (-q).to(dtype=dtype, device=device), (0.5 * p).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# KL to the uniform and mean resultant length.
# ----------------------------------------------------------------------------------------------

#: Below this rho the m = 3 closed form cancels; psi is continued by its Taylor series there.
_PSI_CLAMP = 1e-3


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 where that is available (not on MPS).

    The KL is a batch-sized scalar computation, so float64 costs nothing measurable, and it
    keeps float32 callers accurate where a float32 evaluation would round away the O(rho^2)
    value near 0 or the O(1 - rho) gaps near 1.
    """
    if x.dtype != torch.float64 and x.device.type != "mps":
        return x.double()
    return x


def _atanh_remainder(rho: torch.Tensor) -> torch.Tensor:
    """psi(rho) = (atanh(rho) - rho) / rho^3 = 1/3 + rho^2/5 + rho^4/7 + ..., finite at rho = 0.

    The direct form cancels as rho -> 0; below ``_PSI_CLAMP`` it is evaluated at the clamp and
    continued by the rho^2 / 5 Taylor term (the neglected (rho_c^4 - rho^4) / 7 is < 2e-13),
    which needs no branch and keeps every gradient finite.
    """
    rho_c = rho.clamp_min(_PSI_CLAMP)
    direct = (torch.atanh(rho_c) - rho_c) / rho_c**3
    return direct + (rho * rho - rho_c * rho_c) * 0.2


def spherical_cauchy_kl_to_uniform(rho: torch.Tensor, m: int) -> torch.Tensor:
    """KL(spherical Cauchy(mu, rho) || uniform on S^(m-1)), elementwise in ``rho``; m is ambient.

    Uses KL / (m - 1) = log((1 + rho^2) / (1 - rho^2)) + 1/2 E_q log(1 - z q) (module docstring),
    with 2 atanh(rho^2) for the first term, evaluated in float64 (where available).
    Relative error <= ~2e-8 over rho in [0, 1 - 1e-7] and m up to 4097 (tested against mpmath).
    """
    check_ambient_dim(m)
    r = _wide(rho)
    r2 = r * r
    if m == 2:  # the wrapped Cauchy: E log|u + rho mu|^2 = 0
        kl = -torch.log1p(-r2)
    elif m == 3:  # E_s log(1 + rho^2 + 2 rho s), s ~ U(-1, 1), in closed form
        kl = 2.0 * r2 * (1.0 + (1.0 + r2) * _atanh_remainder(r))
    elif m == 4:  # the Beta(3/2, 3/2) expectation is exactly rho^2 / 2
        kl = 3.0 * (0.5 * r2 - torch.log1p(-r2))
    else:
        neg_q, half_p = _beta_half_rule(m, _num_nodes(m), r.dtype, r.device)
        one_p_r2 = 1.0 + r2
        z = 4.0 * r2 / (one_p_r2 * one_p_r2)
        expectation = torch.log1p(z.unsqueeze(-1) * neg_q) @ half_p
        kl = (m - 1) * (2.0 * torch.atanh(r2) + expectation)
    return kl.to(rho.dtype)


def spherical_cauchy_mean_resultant(rho: torch.Tensor, m: int) -> torch.Tensor:
    """E[mu.x] for the spherical Cauchy on S^(m-1) (m ambient), elementwise in ``rho``.

    By the Moebius map, E[mu.x] = rho + (1 - rho^2) F'(rho) / 2 with
    F(rho) = E_u log|u + rho mu|^2 (the KL divided by m - 1, plus log(1 - rho^2)).
    It rises from 2 (m - 1) rho / m near rho = 0 to 1 at rho = 1. Equivalently
    d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2).
    """
    check_ambient_dim(m)
    r = _wide(rho)
    if m == 2:
        return rho.clone()
    one_m_r2 = (1.0 - r) * (1.0 + r)
    if m == 3:
        d_f = r * (1.0 - one_m_r2 * _atanh_remainder(r))
    elif m == 4:
        d_f = r
    else:
        neg_q, half_p = _beta_half_rule(m, _num_nodes(m), r.dtype, r.device)
        one_p_r2 = 1.0 + r * r
        z = 4.0 * r * r / (one_p_r2 * one_p_r2)
        dz = 8.0 * r * one_m_r2 / one_p_r2**3
        # d/drho of 1/2 E log(1 - z q) = -dz/2 E[q / (1 - z q)]
        ratio = neg_q / (1.0 + z.unsqueeze(-1) * neg_q)
        d_f = 2.0 * r / one_p_r2 + dz * (ratio @ half_p)
    return (r + 0.5 * one_m_r2 * d_f).to(rho.dtype)


# ----------------------------------------------------------------------------------------------
# The distribution.
# ----------------------------------------------------------------------------------------------


class SphericalCauchy(Distribution):
    """Spherical Cauchy distribution on S^(m-1) in R^m (Kato and McCullagh, 2020).

    Dimension convention: ``m`` is the *ambient* dimension, the size of the last axis of
    ``loc``; ``batch_shape == loc.shape[:-1]``, ``event_shape == (m,)``. For a latent of
    intrinsic dimension d use m = d + 1.

    Args:
        loc: mean direction mu, unit vectors of shape ``batch_shape + (m,)``.
        scale: rho in [0, 1), broadcastable to ``batch_shape`` (a trailing axis of size 1,
            as in ``(B, 1)`` with a ``(B, m)`` loc, is squeezed). rho = 0 is the uniform
            distribution; rho -> 1 concentrates at mu (the density's peak is
            ((1 + rho) / (1 - rho))^(m-1) times the uniform's).
        validate_args: torch's validation switch; when on, bad parameters raise ``ValueError``.

    The sampler is the Moebius transformation of a uniform point: exact, without rejection and
    fully reparameterised in ``loc`` and ``scale``.
    """

    arg_constraints = {"loc": unit_vector, "scale": torch.distributions.constraints.half_open_interval(0.0, 1.0)}
    support = unit_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, validate_args: bool | None = None):
        self.loc, self.scale, self.m = broadcast_loc_and_scale(loc, scale, "SphericalCauchy", "scale (rho)")
        batch_shape = self.loc.shape[:-1]
        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            check_unit_loc(self.loc, "SphericalCauchy")
            rho = self.scale
            if not bool(((rho >= 0) & (rho < 1)).all()):
                raise ValueError(
                    "SphericalCauchy: scale (rho) must lie in [0, 1); got values in "
                    f"[{rho.min().item():.6g}, {rho.max().item():.6g}]"
                    + (" including NaN" if bool(rho.isnan().any()) else "")
                )
        super().__init__(batch_shape, torch.Size([self.m]), validate_args=False)
        self._validate_args = validate

    @property
    def rho(self) -> torch.Tensor:
        """The concentration parameter rho (an alias of ``scale``)."""
        return self.scale

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(SphericalCauchy, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + (self.m,))
        new.scale = self.scale.expand(batch_shape)
        new.m = self.m
        super(SphericalCauchy, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = sample_uniform_sphere(shape[:-1], self.m, dtype=self.loc.dtype, device=self.loc.device)
        rho = self.scale
        # Moebius map x = (1 - rho^2) v / |v|^2 + rho mu with v = u + rho mu. Since |x| = 1, x is
        # also the normalised y = v + c mu, c = rho |v|^2 / (1 - rho^2): fewer operations, and the
        # normalisation absorbs the rounding of |u| that (1 - rho^2) / |v|^2 amplifies in the far
        # tail (u within ~1 - rho of -mu). |v|^2 is computed from v itself rather than as
        # 1 + 2 rho mu.u + rho^2, which cancels there; 1 - rho^2 = (1 - rho)(1 + rho) likewise.
        v = torch.addcmul(u, rho.unsqueeze(-1), self.loc)
        c = rho * torch.linalg.vecdot(v, v) / ((1.0 - rho) * (1.0 + rho))
        y = torch.addcmul(v, c.unsqueeze(-1), self.loc)
        return y * torch.linalg.vecdot(y, y).rsqrt().unsqueeze(-1)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        rho = self.scale
        # 1 + rho^2 - 2 rho mu.x = (1 - rho)^2 + rho |x - mu|^2 on the sphere; the right-hand side
        # keeps its digits when x is near mu and rho near 1, where the left-hand side cancels.
        diff = value - self.loc
        dist2 = torch.linalg.vecdot(diff, diff)
        log_ratio = torch.log1p(-rho) + torch.log1p(rho) - torch.log((1.0 - rho).square() + rho * dist2)
        return (self.m - 1) * log_ratio - log_sphere_surface(self.m)

    def kl_to_uniform(self) -> torch.Tensor:
        """KL(self || HypersphericalUniform(m)), shape ``batch_shape``."""
        return spherical_cauchy_kl_to_uniform(self.scale, self.m)

    def entropy(self) -> torch.Tensor:
        return log_sphere_surface(self.m) - self.kl_to_uniform()

    @property
    def mean(self) -> torch.Tensor:
        return spherical_cauchy_mean_resultant(self.scale, self.m).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def __repr__(self) -> str:
        return f"SphericalCauchy(m={self.m}, batch_shape={tuple(self.batch_shape)})"


def _check_same_sphere(p_m: int, q: HypersphericalUniform, family: str) -> None:
    if p_m != q.m:
        raise ValueError(
            f"KL({family} || HypersphericalUniform): ambient dimensions differ (m={p_m} vs m={q.m}); "
            "both must live on the same sphere S^(m-1)"
        )


@register_kl(SphericalCauchy, HypersphericalUniform)
def _kl_spherical_cauchy_uniform(p: SphericalCauchy, q: HypersphericalUniform) -> torch.Tensor:
    _check_same_sphere(p.m, q, "SphericalCauchy")
    kl = p.kl_to_uniform()
    if q.batch_shape in (p.batch_shape, torch.Size()):
        return kl
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
