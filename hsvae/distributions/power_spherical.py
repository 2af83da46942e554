"""The Power Spherical distribution of De Cao and Aziz (2020).

Dimension convention (as everywhere in this package): the distribution lives on the unit
sphere S^(m-1) in R^m; ``m`` -- the *ambient* dimension -- is the size of the last axis of
``loc``; ``batch_shape == loc.shape[:-1]`` and ``event_shape == (m,)``.

Density with respect to the surface measure, for a unit vector ``mu`` and ``kappa >= 0``:

    f(x) = N_m(kappa) (1 + mu.x)^kappa,
    log N_m(kappa) = -[(alpha + beta) log 2 + lgamma(alpha) - lgamma(alpha + beta) + beta log pi],

with alpha = (m-1)/2 + kappa and beta = (m-1)/2. The cosine t = mu.x is 2 B - 1 with
B ~ Beta(alpha, beta), which gives an exact sampler without rejection, reparameterised in
kappa through the Gamma draw of B (see ``_tangent_parts``), or, for odd m <= 33, through an
explicit product of uniforms (see ``_beta_product_parts``).

Subtracting the uniform's log-density (the kappa = 0 case), the log 2 and log pi terms cancel:

    KL(q || uniform) = D(kappa) + kappa (digamma(alpha) - digamma(alpha + beta)),
    D(kappa) = [lgamma(m - 1 + kappa) - lgamma(m - 1)] - [lgamma(beta + kappa) - lgamma(beta)],

which is O(kappa^2) near 0. The lgamma terms are O(m log m) and cancel to that small value,
so these scalar (batch-sized) evaluations run in float64 for float16/32 inputs (except on
MPS, which has no float64).
"""

from __future__ import annotations

import functools
import math

import torch
from torch.distributions import constraints

from hsvae.special import autocast_off

from ._sphere import check_ambient_dim, log_sphere_surface, unit_vector
from ._spherical_utils import SphericalDistribution, _ones, fused_sampler_node, in_float64, rowdot

__all__ = ["PowerSpherical", "power_spherical_kl_to_uniform"]


def _log_normaliser_shift(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """D(kappa) above, in float64 where available: log N_m(kappa) = -log|S^(m-1)| + D - kappa log 2."""
    beta = 0.5 * (m - 1)
    k = in_float64(kappa)
    return (torch.lgamma(k + (m - 1)) - math.lgamma(m - 1)) - (torch.lgamma(k + beta) - math.lgamma(beta))


#: Odd m up to this use the finite sums below instead of lgamma / digamma / trigamma.
_MAX_FINITE_SUM_M = 33


@functools.lru_cache(maxsize=32)
def _rising_offsets(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """c_j = beta + j, j = 0 .. beta - 1, and 1 / c_j, for odd m (integer beta = (m-1)/2)."""
    c = torch.arange((m - 1) // 2, m - 1, dtype=torch.float64)
    return c.to(dtype=dtype, device=device), (1.0 / c).to(dtype=dtype, device=device)


def _kl_and_derivative(k: torch.Tensor, m: int, derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL to the uniform and (if asked) its derivative k (trigamma(alpha) - trigamma(alpha + beta)).

    For odd m, beta = (m-1)/2 is an integer and the Gamma ratios are finite products: with
    c_j = beta + j (j < beta), alpha + j = k + c_j and

        KL = sum_j [log(1 + k / c_j) - k / (k + c_j)],   dKL/dk = sum_j k / (k + c_j)^2,

    where every term is >= 0 (no cancellation at small kappa) and only one transcendental
    function is evaluated. Otherwise (even or large m) the special functions are used.
    """
    if m == 3:  # the single term with c_0 = 1
        one_p_k = 1.0 + k
        frac = k / one_p_k
        return torch.log1p(k) - frac, (frac / one_p_k if derivative else None)
    if m % 2 == 1 and m <= _MAX_FINITE_SUM_M:
        c, inv_c = _rising_offsets(m, k.dtype, k.device)
        u = k.unsqueeze(-1) * inv_c  # k / c_j
        one_p_u = 1.0 + u
        frac = u / one_p_u  # k / (k + c_j)
        with autocast_off(k):
            kl = (torch.log1p(u) - frac) @ _ones(c.shape[0], k.dtype, k.device)
        return kl, (rowdot(frac / one_p_u, inv_c) if derivative else None)  # k / (k + c_j)^2
    beta = 0.5 * (m - 1)
    alpha, total = k + beta, k + (m - 1)
    kl = (torch.lgamma(total) - torch.lgamma(alpha) + (math.lgamma(beta) - math.lgamma(m - 1))) + k * (
        torch.digamma(alpha) - torch.digamma(total)
    )
    kl = kl.clamp_min(0.0)  # KL >= 0; the cancelling lgamma terms can leave -1e-16 where it is ~0
    if not derivative:
        return kl, None
    return kl, k * (torch.polygamma(1, alpha) - torch.polygamma(1, total))


class _PowerSphericalKL(torch.autograd.Function):
    """KL with its analytic derivative computed in the same pass (one autograd node).

    Under ``create_graph=True`` the backward recomputes the derivative with differentiable
    operations, so double backward is exact as well.
    """

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, m: int) -> torch.Tensor:
        ctx.m = m
        kl, dkl = _kl_and_derivative(in_float64(kappa), m, ctx.needs_input_grad[0])
        ctx.save_for_backward(kappa, None if dkl is None else dkl.to(kappa.dtype))
        return kl.to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        kappa, dkl = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the derivative too
            dkl = _kl_and_derivative(in_float64(kappa), ctx.m, True)[1].to(kappa.dtype)
        return grad * dkl, None


def power_spherical_kl_to_uniform(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """KL(PowerSpherical(mu, kappa) || uniform on S^(m-1)), elementwise in ``kappa``; m is ambient.

    Evaluated in float64 where available (the lgamma terms cancel to an O(kappa^2 / m) value)
    and returned in ``kappa``'s dtype; the derivative is analytic.
    """
    check_ambient_dim(m)
    return _PowerSphericalKL.apply(kappa, m)


# ----------------------------------------------------------------------------------------------
# The sampler with a fused backward.
# ----------------------------------------------------------------------------------------------


def _tangent_parts(g: torch.Tensor, loc: torch.Tensor, g_a: torch.Tensor):
    """x = t mu + sqrt(1 - t^2) e from Gaussian noise ``g`` and a Gamma(alpha) draw ``g_a``.

    e = g_perp / |g_perp| with g_perp = g - (g.mu) mu is uniform on the unit sphere of the
    tangent space at mu, and |g_perp|^2 / 2 ~ Gamma((m-1)/2) = Gamma(beta) is independent of it,
    so B = g_a / (g_a + |g_perp|^2 / 2) ~ Beta(alpha, beta) costs no second Gamma draw. With
    h = g_a + |g_perp|^2 / 2: t = (g_a - |g_perp|^2 / 2) / h and sqrt(1 - t^2) / |g_perp| =
    sqrt(2 g_a) / h, free of the cancellation in 1 - t^2 at large kappa. No reflection is needed.
    """
    g_mu = rowdot(g, loc)
    g_perp = torch.addcmul(g, g_mu.unsqueeze(-1), loc, value=-1.0)
    half_q = 0.5 * rowdot(g_perp, g_perp)
    inv_h = 1.0 / (g_a + half_q)
    t = (g_a - half_q) * inv_h
    s = (2.0 * g_a).sqrt() * inv_h
    x = torch.addcmul(t.unsqueeze(-1) * loc, s.unsqueeze(-1), g_perp)
    return g_mu, g_perp, half_q, inv_h, t, s, x


def _tangent_vjp(grad_x, g, loc, g_a, g_mu, g_perp, half_q, inv_h, t, s, x):
    """Vector-Jacobian product of ``_tangent_parts`` with respect to (loc, g_a)."""
    grad_t = rowdot(grad_x, loc)
    grad_s = rowdot(grad_x, g_perp)
    # t = (g_a - q/2) / h, s = sqrt(2 g_a) / h, h = g_a + q/2 with q = |g_perp|^2:
    # dt/dg_a = q / h^2, dt/dq = -g_a / h^2, ds/dg_a = -t / (sqrt(2 g_a) h), ds/dq = -s / (2 h)
    inv_h2 = inv_h * inv_h
    grad_g_a = grad_t * (2.0 * half_q) * inv_h2 - grad_s * t * inv_h / (2.0 * g_a).sqrt()
    grad_q = -(grad_t * g_a * inv_h2 + 0.5 * grad_s * s * inv_h)
    grad_perp = torch.addcmul(s.unsqueeze(-1) * grad_x, (2.0 * grad_q).unsqueeze(-1), g_perp)
    # g_perp = g - (g.mu) mu
    grad_loc = torch.addcmul(t.unsqueeze(-1) * grad_x, g_mu.unsqueeze(-1), grad_perp, value=-1.0)
    grad_loc = torch.addcmul(grad_loc, rowdot(grad_perp, loc).unsqueeze(-1), g, value=-1.0)
    return grad_loc.sum_to_size(loc.shape), grad_g_a


_TangentSample = fused_sampler_node(
    "_TangentSample",
    _tangent_parts,
    _tangent_vjp,
    n_noise=1,
    doc="``_tangent_parts`` as one autograd node; apply(g, loc, g_a). The gradient with respect to kappa flows "
    "through ``g_a`` (torch's reparameterised Gamma).",
)


def _beta_product_parts(g: torch.Tensor, log_u: torch.Tensor, loc: torch.Tensor, kappa: torch.Tensor):
    """x = t mu + sqrt(1 - t^2) e for odd m, with B = (1 + t) / 2 drawn without a Gamma variate.

    For an integer beta = (m-1)/2, B ~ Beta(kappa + beta, beta) is the product
    prod_j U_j^(1 / (kappa + c_j)), c_j = beta + j (j < beta), of independent uniforms (if
    X ~ Beta(a, k) and Y ~ Beta(a + k, 1) are independent, XY ~ Beta(a, k + 1), and
    Beta(a, 1) is U^(1/a)). With ``log_u`` = log U <= 0 (a last axis of size beta, or none when
    beta = 1), w = -log B = -sum_j log U_j / (kappa + c_j): an explicit, exactly
    reparameterised transform of parameter-free noise, cheaper than torch's Gamma sampler and its
    implicit gradient. t = 2 B - 1 and sqrt(1 - t^2) = 2 sqrt(B (1 - B)) = 2 B sqrt(expm1(w))
    keep their digits at large kappa (where w -> 0). The tangent direction is g_perp / |g_perp|.
    """
    if loc.shape[-1] == 3:  # beta = 1: w = -log U / (kappa + 1), log_u has no beta axis
        neg_inv = torch.reciprocal(-1.0 - kappa)
        w = log_u * neg_inv
    else:
        c, _ = _rising_offsets(loc.shape[-1], loc.dtype, loc.device)
        neg_inv = torch.reciprocal(-c - kappa.unsqueeze(-1))  # -1 / (kappa + c_j)
        w = rowdot(log_u, neg_inv)
    # w = 0 only if every U_j is 1 (1 - U for a uniform draw U of exactly 0, p ~ 6e-8 per float32 draw):
    # there B = 1 and the pathwise derivative of sqrt(1 - t^2) is infinite. The smallest normal
    # number keeps it finite (its factor dw/dkappa is 0 there) and moves no sample measurably.
    w = w.clamp_min(torch.finfo(w.dtype).tiny)
    b2 = 2.0 * torch.exp(-w)  # 2 B
    t = b2 - 1.0
    s = b2 * torch.expm1(w).sqrt()
    g_mu = rowdot(g, loc)
    g_perp = torch.addcmul(g, g_mu.unsqueeze(-1), loc, value=-1.0)
    inv_len = rowdot(g_perp, g_perp).rsqrt()
    r = s * inv_len  # the coefficient of g_perp: sqrt(1 - t^2) / |g_perp|
    x = torch.addcmul(t.unsqueeze(-1) * loc, r.unsqueeze(-1), g_perp)
    return neg_inv, w, b2, t, s, g_mu, g_perp, inv_len, r, x


def _beta_product_vjp(grad_x, g, log_u, loc, kappa, neg_inv, w, b2, t, s, g_mu, g_perp, inv_len, r, x):
    """Vector-Jacobian product of ``_beta_product_parts`` with respect to (loc, kappa)."""
    grad_t = rowdot(grad_x, loc)
    grad_r = rowdot(grad_x, g_perp)
    # x = t mu + r g_perp, g_perp = g - (g.mu) mu, r = s / |g_perp| (d r / d g_perp = -r g_perp / |g_perp|^2):
    # grad_perp = r grad_x - coef g_perp with coef = grad_r r / |g_perp|^2, and grad_perp.mu = r grad_t
    # (g_perp.mu = 0), so grad_loc = t grad_x - (g.mu) grad_perp - (grad_perp.mu) g collects into three
    # vector terms with batch-sized coefficients.
    grad_r_len = grad_r * inv_len
    coef = grad_r_len * r * inv_len
    grad_loc = torch.addcmul((t - g_mu * r).unsqueeze(-1) * grad_x, (g_mu * coef).unsqueeze(-1), g_perp)
    grad_loc = torch.addcmul(grad_loc, (r * grad_t).unsqueeze(-1), g, value=-1.0)
    # dt/dw = -2 B, ds/dw = 2 B t / s, and dw/dkappa = sum_j log U_j / (kappa + c_j)^2
    grad_w = b2 * (grad_r_len * t / s - grad_t)
    dw_dkappa = w * neg_inv if loc.shape[-1] == 3 else rowdot(log_u * neg_inv, neg_inv)
    return grad_loc.sum_to_size(loc.shape), (grad_w * dw_dkappa).sum_to_size(kappa.shape)


_BetaProductSample = fused_sampler_node(
    "_BetaProductSample",
    _beta_product_parts,
    _beta_product_vjp,
    n_noise=2,
    doc="``_beta_product_parts`` as one autograd node; apply(g, log_u, loc, kappa).",
)


class _FiniteNonnegative(constraints.Constraint):
    """Finite reals >= 0 (kappa = inf has no sampler or density)."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value >= 0) & torch.isfinite(value)

    def __repr__(self) -> str:
        return "finite_nonnegative()"


class PowerSpherical(SphericalDistribution):
    """Power Spherical distribution on S^(m-1) in R^m (De Cao and Aziz, 2020).

    Dimension convention: ``m`` is the *ambient* dimension, the size of the last axis of
    ``loc``; ``batch_shape == loc.shape[:-1]``, ``event_shape == (m,)``. For a latent of
    intrinsic dimension d use m = d + 1.

    Args:
        loc: mean direction mu, unit vectors of shape ``batch_shape + (m,)``.
        scale: the concentration kappa >= 0 (finite), broadcastable to ``batch_shape`` (a
            trailing axis of size 1, as in ``(B, 1)`` with a ``(B, m)`` loc, is squeezed).
            kappa = 0 is the uniform distribution.
        validate_args: torch's validation switch; when on, bad parameters raise ``ValueError``.

    Sampling is exact (no rejection): t = mu.x = 2 B - 1 with B ~ Beta(alpha, beta) drawn as
    G_a / (G_a + G_b), and x = t mu + sqrt(1 - t^2) e with e uniform on the tangent sphere at
    mu. One Gaussian vector g gives both e (its component orthogonal to mu, normalised) and
    G_b = |g_perp|^2 / 2 ~ Gamma((m-1)/2); G_a comes from torch's reparameterised Gamma sampler,
    through which the gradient with respect to kappa flows. Projecting onto the tangent space
    replaces the Householder reflection of e1 onto mu (same distribution, fewer operations, no
    special case at mu = e1), and sqrt(1 - t^2) = 2 sqrt(G_a G_b) / (G_a + G_b) keeps its digits
    at large kappa. For odd m <= 33 (integer beta) B is instead a product of beta powers of
    uniforms (``_beta_product_parts``): exact as well, and without the Gamma sampler and its
    implicit gradient, which dominate the cost at small m.
    """

    arg_constraints = {"loc": unit_vector, "scale": _FiniteNonnegative()}
    scale_name = "kappa"
    scale_requirement = "finite and >= 0"
    concentration = property(lambda self: self.scale, doc="The concentration kappa (torch's ``scale``).")

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        if self.m % 2 == 1 and self.m <= _MAX_FINITE_SUM_M:
            # integer beta: B as a product of beta uniforms' powers (see _beta_product_parts)
            noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            # log(1 - U) for U uniform on [0, 1): the log of a uniform on (0, 1], always finite
            beta = (self.m - 1) // 2
            uniforms = torch.rand(shape[:-1] + ((beta,) if beta > 1 else ()), dtype=self.loc.dtype, device=self.loc.device)
            return _BetaProductSample.sample(noise, uniforms.neg_().log1p_(), self.loc, self.scale)
        # torch._standard_gamma is what torch.distributions.Gamma.rsample uses; it carries the
        # implicit reparameterisation gradient in its concentration (here kappa + (m-1)/2).
        g_a = torch._standard_gamma((self.scale + 0.5 * (self.m - 1)).expand(shape[:-1]))
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return _TangentSample.sample(noise, self.loc, g_a)

    def _log_normaliser(self) -> torch.Tensor:
        kappa = self.scale
        shift = _log_normaliser_shift(kappa, self.m) - in_float64(kappa) * math.log(2.0)
        return (shift - log_sphere_surface(self.m)).to(kappa.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cos = rowdot(value, self.loc)
        # xlogy: 0 * log(0) = 0 at kappa = 0 and x = -mu.
        return self._log_normaliser() + torch.xlogy(self.scale, 1.0 + cos)

    def kl_to_uniform(self) -> torch.Tensor:
        return power_spherical_kl_to_uniform(self.scale, self.m)

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        # E[t] = (alpha - beta) / (alpha + beta) = kappa / (m - 1 + kappa)
        return self.scale / (self.scale + (self.m - 1))

    def mean_resultant_complement(self) -> torch.Tensor:
        return (self.m - 1) / (self.scale + (self.m - 1))
