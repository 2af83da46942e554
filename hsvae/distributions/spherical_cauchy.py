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
exact closed form, which is used instead. The KL is evaluated in float64 (where the device has
it) and its derivative in the same pass; d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2) also
gives the mean.

Speed: the sampler and the KL are single autograd nodes with hand-written backward passes (at
small m the cost is dominated by the number of tensor operations, not by their size); both are
checked against plain autograd, including double backward.
"""

from __future__ import annotations

import functools

import torch

from hsvae.special import autocast_off

from ._sphere import check_ambient_dim, log_sphere_surface, unit_vector
from ._spherical_utils import SphericalDistribution, fused_sampler_node, in_float64, rowdot

__all__ = ["SphericalCauchy", "spherical_cauchy_kl_to_uniform", "spherical_cauchy_mean_resultant"]

# ----------------------------------------------------------------------------------------------
# Gauss-Jacobi rule for q ~ Beta(1/2, b).
# ----------------------------------------------------------------------------------------------


def _num_nodes(m: int) -> int:
    """Nodes of the Gauss-Jacobi rule for ambient dimension m >= 5.

    The larger m, the more the weight (1 - q)^((m-3)/2) damps the log singularity of the
    integrand near q = 1 (reached as rho -> 1), and the fewer nodes are needed. Chosen so that
    the KL's relative error stays below 5e-8 (m = 5, worst) and mostly below 1e-9 over
    rho in [0, 1) in float64, measured against mpmath quadrature; the derivative (and the mean
    resultant length) is accurate to ~1e-7.
    """
    for upper, nodes in ((5, 32), (6, 24), (7, 16), (9, 12), (13, 10), (19, 8)):
        if m <= upper:
            return nodes
    return 6


@functools.lru_cache(maxsize=64)
def _beta_half_rule(m: int, n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes q_i and probability weights p_i of the n-point Gauss rule for q ~ Beta(1/2, (m-1)/2).

    Golub-Welsch on the Jacobi matrix of the Jacobi polynomials with weight
    (1 - x)^alpha (1 + x)^beta on [-1, 1], alpha = (m-3)/2, beta = -1/2, and q = (1 + x)/2.
    Built once in float64 on the CPU and cached per (m, n, dtype, device).
    Returns the nodes as ``-4 q`` and the weights as ``(m - 1) p / 2``: the constants of the KL
    formula are folded in, so that the hot path spends no operation on them.
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
    return (-4.0 * q).to(dtype=dtype, device=device), (0.5 * (m - 1) * p).to(dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------
# KL to the uniform, its derivative and the mean resultant length.
# ----------------------------------------------------------------------------------------------

#: Below this rho the m = 3 closed form cancels; psi is evaluated at the clamp there.
_PSI_CLAMP = 1e-3


def _atanh_remainder(r: torch.Tensor) -> torch.Tensor:
    """psi(r) = (atanh(r) - r) / r^3 = 1/3 + r^2/5 + ..., finite at r = 0.

    The direct form cancels as r -> 0, so r is clamped to >= 1e-3 (in float64 the direct form
    keeps ~10 digits there); below the clamp psi is off by at most 2e-7 relative, which moves the
    m = 3 KL by < 1e-7 relative and the derivative by less (it uses psi, not psi').
    """
    r_c = r.clamp_min(_PSI_CLAMP)
    return (torch.atanh(r_c) - r_c) / (r_c * r_c * r_c)


def _kl_and_derivative(
    r: torch.Tensor, m: int, derivative: bool, quad_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL to the uniform and (if asked) d KL / d rho at rho = r, sharing intermediates.

    ``r`` should be float64 where available (see ``in_float64``). ``quad_dtype`` (default: r's) is
    the precision of the (batch, nodes) quadrature terms: these are O(rho^2) near 0, bounded
    near 1 and enter without cancellation, so float32 callers lose nothing measurable by
    evaluating them in float32, at half the cost. The identity
    d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2) links the derivative to the mean.
    """
    r2 = r * r
    if m == 2:  # the wrapped Cauchy: E log|u + rho mu|^2 = 0
        return -torch.log1p(-r2), (2.0 * r / (1.0 - r2) if derivative else None)
    if m == 3:  # E_s log(1 + rho^2 + 2 rho s), s ~ U(-1, 1), in closed form
        psi = _atanh_remainder(r)
        kl = (2.0 * r2) * torch.addcmul(psi, r2, psi).add_(1.0)
        if not derivative:
            return kl, None
        one_m_r2 = 1.0 - r2
        # 2 / (1 - rho^2) + 1 = (3 - rho^2) / (1 - rho^2)
        return kl, (2.0 * r) * torch.addcmul((3.0 - r2) / one_m_r2, one_m_r2, psi, value=-1.0)
    if m == 4:  # the Beta(3/2, 3/2) expectation is exactly rho^2 / 2
        return 3.0 * (0.5 * r2 - torch.log1p(-r2)), (3.0 * r * (1.0 + 2.0 / (1.0 - r2)) if derivative else None)
    # nodes are -4 q and weights (m - 1) p / 2 (see _beta_half_rule); z / 4 = rho^2 / (1 + rho^2)^2
    quad_dtype = quad_dtype or r.dtype
    neg_4q, weights = _beta_half_rule(m, _num_nodes(m), quad_dtype, r.device)
    one_p_r2 = 1.0 + r2
    one_p_r2_sq = one_p_r2 * one_p_r2
    zq = (r2 / one_p_r2_sq).to(quad_dtype).unsqueeze(-1) * neg_4q
    # log((1 + rho^2) / (1 - rho^2)) = 2 atanh(rho^2), accurate at both ends in float64.
    with autocast_off(zq):
        kl = (torch.log1p(zq) @ weights).to(r.dtype) + (2.0 * (m - 1)) * torch.atanh(r2)
    kl = kl.clamp_min(0.0)  # KL >= 0; the two terms can round to -1e-17 where the KL is ~0
    if not derivative:
        return kl, None
    # d/drho of 1/2 E log(1 - z q) is -dz/2 E[q / (1 - z q)], with dz/4 = 2 rho (1 - rho^2) / (1 + rho^2)^3
    one_m_r2 = 1.0 - r2
    dz_4 = (2.0 * r) * one_m_r2 / (one_p_r2_sq * one_p_r2)
    with autocast_off(zq):
        expectation = ((neg_4q / (1.0 + zq)) @ weights).to(r.dtype)
    return kl, torch.addcmul((4.0 * (m - 1)) * r / (one_m_r2 * one_p_r2), dz_4, expectation)


def _quad_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32 (``torch.promote_types`` is a dispatched operator: measurable at small m)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _SphericalCauchyKL(torch.autograd.Function):
    """KL with an analytic derivative computed in the same pass (the KL is on the hot path).

    First-order backward multiplies by the saved derivative. Under ``create_graph=True`` the
    backward recomputes the derivative with differentiable operations on ``rho``, so double
    backward is exact as well.
    """

    @staticmethod
    def forward(ctx, rho: torch.Tensor, m: int) -> torch.Tensor:
        ctx.m = m
        kl, dkl = _kl_and_derivative(in_float64(rho), m, ctx.needs_input_grad[0], _quad_dtype(rho.dtype))
        ctx.save_for_backward(rho, None if dkl is None else dkl.to(rho.dtype))
        return kl.to(rho.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rho, dkl = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the derivative too
            dkl = _kl_and_derivative(in_float64(rho), ctx.m, True, _quad_dtype(rho.dtype))[1].to(rho.dtype)
        return grad * dkl, None


def spherical_cauchy_kl_to_uniform(rho: torch.Tensor, m: int) -> torch.Tensor:
    """KL(spherical Cauchy(mu, rho) || uniform on S^(m-1)), elementwise in ``rho``; m is ambient.

    KL / (m - 1) = log((1 + rho^2) / (1 - rho^2)) + 1/2 E_q log(1 - z q) (module docstring),
    evaluated in float64 where available (the quadrature terms in at least float32 and in
    ``rho``'s precision) and returned in ``rho``'s dtype. In float64, relative error <= ~5e-8 for
    rho in [0, 1 - 1e-7] and m up to 4097 (tested against mpmath quadrature); in float32 within
    1e-6 of the float64 value. Finite and differentiable (analytic derivative) on all of [0, 1).
    """
    check_ambient_dim(m)
    return _SphericalCauchyKL.apply(rho, m)


def spherical_cauchy_mean_resultant(rho: torch.Tensor, m: int) -> torch.Tensor:
    """E[mu.x] for the spherical Cauchy on S^(m-1) (m ambient), elementwise in ``rho``.

    From the Moebius map, E[mu.x] = rho + (1 - rho^2) F'(rho) / 2 with F(rho) = E_u log|u + rho mu|^2,
    which is the identity d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2). It rises from
    2 (m - 1) rho / m near rho = 0 to 1 at rho = 1. Differentiable with ordinary autograd.
    """
    check_ambient_dim(m)
    if m == 2:
        return rho.clone()
    r = in_float64(rho)
    dkl = _kl_and_derivative(r, m, True)[1]
    return (dkl * ((1.0 - r) * (1.0 + r)) / (2.0 * (m - 1))).to(rho.dtype)


# ----------------------------------------------------------------------------------------------
# The Moebius sampler with a fused backward.
# ----------------------------------------------------------------------------------------------


def _mobius_parts(g: torch.Tensor, loc: torch.Tensor, rho: torch.Tensor):
    """Moebius image x of the uniform points u = g / |g|, and the intermediates of the map.

    ``g`` is standard normal noise of shape ``S + batch_shape + (m,)``. The map is
    x = (1 - rho^2) v / |v|^2 + rho mu with v = u + rho mu. As |x| = 1, x is also the normalised
    y = v + c mu, c = rho |v|^2 / (1 - rho^2); scaling v by |g| (v' = g + rho |g| mu) saves
    normalising u. The final normalisation also absorbs the rounding that (1 - rho^2) / |v|^2
    amplifies in the far tail (u within ~1 - rho of -mu). |v'|^2 is computed from v' itself
    rather than as |g|^2 (1 + 2 rho mu.u + rho^2), which cancels there, and 1 - rho^2 as
    (1 - rho)(1 + rho), which does not cancel as rho -> 1.
    """
    g_len = rowdot(g, g).sqrt()
    a = (rho * g_len).unsqueeze(-1)
    v = torch.addcmul(g, a, loc)
    n = rowdot(v, v)
    one_m_r2 = (1.0 - rho) * (1.0 + rho)
    k_rho = torch.reciprocal(g_len * one_m_r2)  # k / rho, finite at rho = 0 (for the backward)
    k = rho * k_rho
    c = (k * n).unsqueeze(-1)
    y = torch.addcmul(v, c, loc)
    inv_len = rowdot(y, y).rsqrt().unsqueeze(-1)
    return g_len, a, v, n, one_m_r2, c, k, k_rho, inv_len, y * inv_len


def _mobius_vjp(grad_x, g, loc, rho, g_len, a, v, n, one_m_r2, c, k, k_rho, inv_len, x):
    """Vector-Jacobian product of ``_mobius_parts`` with respect to (loc, rho)."""
    # x = y / |y|;  y = v + c loc;  c = k n;  k = rho / (|g| (1 - rho^2));  n = |v|^2;  v = g + a loc, a = rho |g|.
    grad_y = (grad_x - rowdot(grad_x, x).unsqueeze(-1) * x) * inv_len
    grad_c = rowdot(grad_y, loc)
    grad_v = torch.addcmul(grad_y, (k * grad_c).unsqueeze(-1), v, value=2.0)
    # dk/drho = (1 + rho^2) / (|g| (1 - rho^2)^2) = (k / rho) (1 + rho^2) / (1 - rho^2)
    dk = torch.addcmul(k_rho, k_rho, rho * rho) / one_m_r2
    grad_rho = torch.addcmul(grad_c * n * dk, g_len, rowdot(grad_v, loc))
    grad_loc = torch.addcmul(c * grad_y, a, grad_v)
    return grad_loc.sum_to_size(loc.shape), grad_rho.sum_to_size(rho.shape)


_MobiusSample = fused_sampler_node(
    "_MobiusSample",
    _mobius_parts,
    _mobius_vjp,
    n_noise=1,
    doc="x = Moebius(g / |g|; loc, rho) as one autograd node; apply(g, loc, rho). Tests check its first and "
    "second derivatives against plain autograd through ``_mobius_parts``.",
)


# ----------------------------------------------------------------------------------------------
# The distribution.
# ----------------------------------------------------------------------------------------------


class SphericalCauchy(SphericalDistribution):
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
    scale_name = "rho"
    scale_requirement = "in [0, 1)"
    rho = property(lambda self: self.scale, doc="The concentration parameter rho (torch's ``scale``).")

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return _MobiusSample.sample(noise, self.loc, self.scale)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        rho = self.scale
        # 1 + rho^2 - 2 rho mu.x = (1 - rho)^2 + rho |x - mu|^2 on the sphere; the right-hand side
        # keeps its digits when x is near mu and rho near 1, where the left-hand side cancels.
        diff = value - self.loc
        dist2 = rowdot(diff, diff)
        log_ratio = torch.log1p(-rho) + torch.log1p(rho) - torch.log((1.0 - rho).square() + rho * dist2)
        return (self.m - 1) * log_ratio - log_sphere_surface(self.m)

    def kl_to_uniform(self) -> torch.Tensor:
        return spherical_cauchy_kl_to_uniform(self.scale, self.m)

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        return spherical_cauchy_mean_resultant(self.scale, self.m)
