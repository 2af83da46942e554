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
s = mu.u (whose density is proportional to (1 - s^2)^((m-3)/2)) and x = rho^2,

    KL / (m - 1) = E_s log(1 + rho^2 + 2 rho s) - log(1 - rho^2)
                 = -log(1 - x) - sum_(k>=1) c_k x^k / k,   c_k = (1 - m/2)_k / (m/2)_k,

(rising factorials; the Gegenbauer expansion of the log), and E[mu.x] = rho H with
H = 1 - (1 - x) sum_(k>=1) c_k x^(k-1), which also gives d KL / d rho = 2 (m - 1) rho H / (1 - rho^2).
For even m the sum is a polynomial of degree m/2 - 1 (c_k = 0 from k = m/2 on). For odd m it is
infinite, with terms ~ k^(-m) at x -> 1: m = 3, 5, 7 use exact closed forms in atanh(rho) / rho
above small x (where the series is geometric; m = 3 and 5 in the fewest operations, through
psi = (atanh(rho) - rho) / rho^3 and psi_2 = (atanh(rho) / rho - 1 - rho^2 / 3) / rho^4), other odd m the series truncated where its tail is
below 1e-18 (284 terms at m = 9, 124 at m = 11, ~4.5 sqrt(m) at large m). Series coefficients are
exact rationals rounded once; powers of x come from cumulative products (blocked for long series).
Everything runs in float64 (where the device has it) and is returned in the caller's dtype.
Measured against mpmath at 40 digits (tests/distributions/test_mpmath_exact.py): the KL, its
derivative, the mean resultant length, the entropy and KL(SC || SC) within 1e-13 relative (measured
worst ~2e-15) in float64 for m = 2 ... 1025 and rho from 1e-6 to 1 - 1e-12.

Speed: the sampler and the KL are single autograd nodes with hand-written backward passes (at small m the cost
is the number of tensor operations, not their size: constants are cached 0-dim tensors); both are checked
against plain autograd, including double backward. scripts/bench_distributions.py times them (issue 26).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import torch

from hsvae.special import autocast_off, scalar

from ._sphere import check_ambient_dim, log_sphere_surface, unit_vector
from ._spherical_utils import SphericalDistribution, fused_sampler_node, in_float64, rowdot

__all__ = ["SphericalCauchy", "spherical_cauchy_kl_to_uniform", "spherical_cauchy_mean_resultant"]

# ----------------------------------------------------------------------------------------------
# KL to the uniform, its derivative and the mean resultant length.
# ----------------------------------------------------------------------------------------------

#: Truncation of the power series: the first omitted term's coefficient, times x_max^k, is below this, so
#: the omitted tails of G and H are below ~1e-18 relative to them (|c_k| decreases in k, G >= (1 - c_1) x
#: and H >= 1).
_SERIES_TAIL = 1e-18

#: Odd m with a closed form, used above _CLOSED_FORM_X: the polynomial coefficients, in increasing powers of
#: x = rho^2, of x^n G = Pg(x) T + Qg(x) and x^(n+1) H = Ph(x) T + Qh(x), n = (m - 3) / 2, T = atanh(rho) / rho.
#: Derived by integrating the polynomial s-density (1 - s^2)^n against log(1 + rho^2 + 2 rho s) (the
#: log(1 - rho^2) terms cancel exactly; Ph is a multiple of (1 - x)^(m-1)); checked against mpmath by the tests.
_CLOSED_FORMS: dict[int, tuple[tuple[float, ...], ...]] = {
    7: (
        (3 / 128, -25 / 128, 75 / 64, 75 / 64, -25 / 128, 3 / 128),
        (-3 / 128, 3 / 16, -1067 / 960, 3 / 16, -3 / 128),
        (-15 / 256, 45 / 128, -225 / 256, 75 / 64, -225 / 256, 45 / 128, -15 / 256),
        (15 / 256, -85 / 256, 99 / 128, 99 / 128, -85 / 256, 15 / 256),
    ),
}
#: Per m, the x below which the closed form cancels (its terms are O(x^-(n+1)) times the result) and the
#: series, geometric there, is used instead. Measured against mpmath: at and above these the closed forms
#: stay within 2e-15 relative (G and H).
#: The lower the threshold, the fewer series terms (30 terms). (m = 3 and 5: see _g_and_h_3, _g_and_h_5.)
_CLOSED_FORM_X = {7: 0.25}
#: Series with more terms than this are evaluated in blocks (about sqrt(K) powers of x and of x^b).
_SINGLE_BLOCK = 40


def _c(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a cached 0-dim tensor like ``like`` (an op with a python float converts it first, on the CPU)."""
    return scalar(value, like.dtype, like.device)


@functools.lru_cache(maxsize=None)
def _series_coefficients(m: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients g_k, h_k (k = 0 .. K) of the power series in x = rho^2 of G (less its log term) and H.

    With c_k = (1 - m/2)_k / (m/2)_k (rising factorials; c_(k+1) / c_k = (k + 1 - m/2) / (k + m/2)):
    G = KL / (m - 1) = -log(1 - x) - sum_(k>=1) c_k x^k / k and H = 1 - (1 - x) sum_(k>=1) c_k x^(k-1)
    = (1 - c_1) + sum_(k>=1) (c_k - c_(k+1)) x^k. For the m of ``_CLOSED_FORMS`` the series serves
    x <= x_max = _CLOSED_FORM_X[m] only and holds all of G, g_k = (1 - c_k) / k, truncated where
    x_max^(K+1) < _SERIES_TAIL; otherwise g_k = -c_k / k, -log(1 - x) is added apart, and K is where
    |c_(K+1)| < _SERIES_TAIL: for even m no later than m/2 - 1 (c_k = 0 from k = m/2 on: a polynomial);
    for odd m >= 9, 284 terms at m = 9, 124 at m = 11, 52 at m = 15, then about 4.5 sqrt(m) (144 at m = 1025).
    Exact rationals, rounded once to float64.
    """
    closed = m in _CLOSED_FORMS
    x_max = Fraction(_CLOSED_FORM_X[m]) if closed else Fraction(1)
    c = [Fraction(1)]
    # with the closed form's series the bound is on x_max^k itself (g_k = (1 - c_k) / k does not decay)
    while len(c) < 2 or (x_max ** (len(c) - 1) if closed else abs(c[-1])) >= _SERIES_TAIL and c[-1] != 0:
        k = len(c) - 1
        c.append(c[-1] * Fraction(2 * k + 2 - m, 2 * k + m))
    K = len(c) - 2  # c holds c_0 .. c_(K+1); c_(K+1) is the first omitted (or 0)
    one = 1 if m in _CLOSED_FORMS else 0
    g = [0.0] + [float((one - c[k]) / k) for k in range(1, K + 1)]
    h = [float(1 - c[1])] + [float(c[k] - (c[k + 1] if k < K else 0)) for k in range(1, K + 1)]
    return tuple(g), tuple(h)


class _SeriesPlan(NamedTuple):
    """Cached tensors of one power series in x: ``blocks == 1``: first/rest (K+1,), coef (K+1, 2); else
    powers x^j (j < b) and y^i (i < n), y = x^b, with coef (b, 2 n): column t n + i holds the coefficients
    of x^(i b + j) of series t (0: G, 1: H)."""

    blocks: int
    first: torch.Tensor
    rest: torch.Tensor
    coef: torch.Tensor
    first_n: torch.Tensor | None
    rest_n: torch.Tensor | None
    ones_n: torch.Tensor | None


def _power_rows(count: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """e_0 and 1 - e_0: addcmul(e_0, x, 1 - e_0) is (1, x, ..., x), whose cumulative product is the powers."""
    first = torch.zeros(count, dtype=dtype, device=device)
    first[0] = 1.0
    return first, 1.0 - first


@functools.lru_cache(maxsize=128)
def _series_plan(m: int, dtype: torch.dtype, device: torch.device) -> _SeriesPlan:
    g, h = _series_coefficients(m)
    coef = torch.tensor([g, h], dtype=torch.float64).T  # (K + 1, 2)
    terms = coef.shape[0]
    if terms <= _SINGLE_BLOCK:
        return _SeriesPlan(1, *_power_rows(terms, dtype, device), coef.to(dtype=dtype, device=device), None, None, None)
    b = math.isqrt(terms - 1) + 1
    n = -(-terms // b)
    padded = torch.zeros(n * b, 2, dtype=torch.float64)
    padded[:terms] = coef
    blocked = padded.reshape(n, b, 2).permute(1, 2, 0).reshape(b, 2 * n)  # [j, t n + i] = coef[i b + j, t]
    first_n, rest_n = (row.expand(2, n).contiguous() for row in _power_rows(n, dtype, device))
    ones_n = torch.ones(n, dtype=dtype, device=device)
    return _SeriesPlan(n, *_power_rows(b, dtype, device), blocked.to(dtype=dtype, device=device), first_n, rest_n, ones_n)


def _series(x: torch.Tensor, plan: _SeriesPlan) -> torch.Tensor:
    """(sum g_k x^k, sum h_k x^k) along a new last axis. Powers by cumulative products (exact at x = 0,
    k eps relative at x^k, cheaper than pow) and a matrix product with the cached coefficients."""
    powers = torch.addcmul(plan.first, x.unsqueeze(-1), plan.rest).cumprod(-1)
    with autocast_off(x):
        if plan.blocks == 1:
            return powers @ plan.coef
        y = (powers[..., -1] * x).unsqueeze(-1).unsqueeze(-1)  # x^b
        # (2, n) rows of (1, y, ..., y^(n-1)): contiguous like the block sums below, whose product is then
        # a plain elementwise one (a broadcast over a strided view costs several times more on the CPU)
        y_powers = torch.addcmul(plan.first_n, y, plan.rest_n).cumprod(-1)
        return ((powers @ plan.coef).view(powers.shape[:-1] + (2, plan.blocks)) * y_powers) @ plan.ones_n


@functools.lru_cache(maxsize=16)
def _closed_form_plan(m: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first, rest, coef): coef (deg + 1, 4) holds Pg, Ph, Qg, Qh of ``_CLOSED_FORMS`` as columns."""
    pg, qg, ph, qh = _CLOSED_FORMS[m]
    terms = max(map(len, (pg, qg, ph, qh)))
    coef = torch.zeros(terms, 4, dtype=torch.float64)
    for column, poly in enumerate((pg, ph, qg, qh)):
        coef[: len(poly), column] = torch.tensor(poly, dtype=torch.float64)
    return (*_power_rows(terms, dtype, device), coef.to(dtype=dtype, device=device))


#: psi_k(x) = (T - sum_(i<k) x^i / (2i + 1)) / x^k = sum_j x^j / (2(j + k) + 1), T = atanh(rho) / rho, for the
#: closed forms of m = 3 (k = 1) and m = 5 (k = 2): by its series below the x given here (terms to ~1e-17), by the
#: direct form above, which there loses ~(2k + 1) 2 eps / x^k of its relative precision (m = 3: 3e-14 on a psi
#: that carries a quarter of G; m = 5: 1e-13 on a term that carries at most 2% of G and H: 2e-14 either way).
_PSI_SWITCH = {1: (0.04, 11), 2: (0.05, 12)}


@functools.lru_cache(maxsize=16)
def _psi_coefficients(k: int, dtype: torch.dtype, device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor], list[float]]:
    """The series' coefficients 1 / (2(j + k) + 1) (the constant term as a 0-dim tensor, the rest as a vector) and
    those of the direct form's polynomial sum_(i<k) x^i / (2i + 1) (highest first)."""
    terms = _PSI_SWITCH[k][1]
    series = torch.tensor([1.0 / (2 * (j + k) + 1) for j in range(terms)], dtype=dtype, device=device)
    return (series[0].clone(), series[1:].clone()), [1.0 / (2 * i + 1) for i in reversed(range(k))]


def _psi(k: int, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """psi_k at rho = r (x = r^2), without the direct form's cancellation at small x. Each branch is fed an
    argument held in its own range (where, not clamps: at the switch a clamp would hand the derivative to both
    branches, a tie), so the other one stays finite and its gradient zero."""
    switch = _PSI_SWITCH[k][0]
    (c0, c_rest), head = _psi_coefficients(k, r.dtype, r.device)
    direct_side = x > switch
    x_s = torch.where(direct_side, _c(switch, x), x)
    # the powers by a cumulative product and one matrix-vector product: 4 ops where Horner took one per term
    # (all terms positive, so the order of summation costs no digits)
    powers = x_s.unsqueeze(-1).expand(*x_s.shape, c_rest.shape[0]).cumprod(-1)
    with autocast_off(x):
        series = powers @ c_rest + c0
    r_c = torch.where(direct_side, r, _c(switch ** 0.5, r))
    x_c = r_c * r_c
    polynomial = _c(head[0], x)
    for c in head[1:]:
        polynomial = torch.addcmul(_c(c, x), x_c, polynomial)
    direct = (torch.atanh(r_c) / r_c - polynomial) / (x_c if k == 1 else x_c.pow(k))
    return torch.where(direct_side, direct, series)


def _g_and_h_3(r: torch.Tensor, x: torch.Tensor, one_m_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """m = 3 (few operations: the KL is on the training hot path): with psi_1 = (atanh(rho) - rho) / rho^3 > 0,
    G = x (1 + (1 + x) psi_1) and H = ((3 - x) - (1 - x)^2 psi_1) / 2 (>= 1; the subtraction cancels at most a
    third)."""
    psi = _psi(1, r, x)
    g = torch.addcmul(x, x * (x + _c(1.0, x)), psi)
    h = torch.addcmul(torch.addcmul(_c(1.5, x), x, _c(-0.5, x)), one_m_x * one_m_x, psi, value=-0.5)
    return g, h


def _g_and_h_5(r: torch.Tensor, x: torch.Tensor, one_m_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """m = 5, from the closed form x G = Pg T + Qg, x^2 H = Ph T + Qh with T = 1 + x/3 + x^2 psi_2 (exact
    polynomial division): G = x [(13/8 + x/4 - x^2/24) + Pg psi_2], Pg = -(1 + x)(1 - 10 x + x^2) / 8, and
    H = (25 - 9 x - x^2 + x^3) / 16 + (3/16) (1 - x)^4 psi_2. Nothing cancels: at x = 0 the brackets are
    13/8 - 1/40 and 8/5 (G ~ 8x/5, H -> 2 (m-1)/m); near x = 1 the psi_2 terms grow like atanh(rho) in G and
    vanish with (1 - x)^4 in H."""
    psi = _psi(2, r, x)
    one = _c(1.0, x)
    pg_times_minus_8 = (x + one) * torch.addcmul(one, x, x - _c(10.0, x))
    g_poly = torch.addcmul(torch.addcmul(_c(1.625, x), x, _c(0.25, x)), x, x, value=-1.0 / 24.0)
    g = x * torch.addcmul(g_poly, pg_times_minus_8, psi, value=-0.125)
    om2 = one_m_x * one_m_x
    h_poly_times_16 = torch.addcmul(torch.addcmul(torch.addcmul(_c(25.0, x), x, _c(-9.0, x)), x, x, value=-1.0), x, x * x)
    h = torch.addcmul(h_poly_times_16, om2 * om2, psi, value=3.0) * _c(0.0625, x)
    return g, h


def _g_and_h(r: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G = KL / (m - 1), H = (1 - x) dG/dx = E[mu.x] / rho and 1 - x (x = rho^2), elementwise, r's dtype.

    KL / (m - 1) = -log(1 - x) - S(x), S(x) = sum_(k>=1) c_k x^k / k, c_k = (1 - m/2)_k / (m/2)_k: the
    expansion of E_s log(1 + rho^2 + 2 rho s) (s = mu.u, density proportional to (1 - s^2)^((m-3)/2)) in
    Gegenbauer terms. -log(1 - x) = log1p(x / (1 - x)) with 1 - x = (1 - rho)(1 + rho): both x and 1 - x
    keep their relative precision, so this holds a few ulps at both ends. Even m: S is a polynomial.
    Odd m = 3, 5 (:func:`_g_and_h_3`, :func:`_g_and_h_5`, through :func:`_psi`), 7: closed forms in
    T = atanh(rho) / rho above ``_CLOSED_FORM_X`` (the log terms cancel), the series (geometric) below. Other odd
    m: the series, truncated where its tail is below 1e-18 at x = 1.
    Branches are chosen with ``torch.where`` on clamped arguments (no host sync, no NaN in either branch).
    """
    one = _c(1.0, r)
    one_m_x = (one - r) * (r + one)
    x = r * r
    if m == 2:  # S = 0, H = 1
        return torch.log1p(x / one_m_x), torch.ones_like(r), one_m_x
    if m == 3:
        return *_g_and_h_3(r, x, one_m_x), one_m_x
    if m == 5:
        return *_g_and_h_5(r, x, one_m_x), one_m_x
    if m == 4:  # S = -x / 2, H = 3/2 - x/2
        return torch.log1p(x / one_m_x).add_(x, alpha=0.5), torch.addcmul(_c(1.5, x), x, _c(-0.5, x)), one_m_x
    plan = _series_plan(m, r.dtype, r.device)
    if m not in _CLOSED_FORMS:
        gh = _series(x, plan)
        return torch.log1p(x / one_m_x) + gh[..., 0], gh[..., 1], one_m_x
    # the closed form on x >= 1/4 and the series on x <= 1/4, each fed an argument clamped into its range
    # each branch is fed its argument only where it is taken (a constant elsewhere), selected by the same
    # mask as the result: a clamp would pass half a gradient to both at the boundary (a tie)
    x_0 = _CLOSED_FORM_X[m]
    closed = x > x_0
    gh_series = _series(torch.where(closed, x_0, x), plan)
    r_c = torch.where(closed, r, math.sqrt(x_0))
    x_c = r_c * r_c
    first, rest, coef = _closed_form_plan(m, r.dtype, r.device)
    powers = torch.addcmul(first, x_c.unsqueeze(-1), rest).cumprod(-1)
    with autocast_off(x):
        polys = powers @ coef  # (Pg, Ph, Qg, Qh)
    t = (torch.atanh(r_c) / r_c).unsqueeze(-1)
    n = (m - 3) // 2
    gh_closed = torch.addcmul(polys[..., 2:], polys[..., :2], t) / powers[..., n : n + 2]  # / (x^n, x^(n+1))
    gh = torch.where(closed.unsqueeze(-1), gh_closed, gh_series)
    return gh[..., 0], gh[..., 1], one_m_x


def _kl_and_derivative(r: torch.Tensor, m: int, derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL to the uniform and (if asked) d KL / d rho = 2 (m - 1) rho H / (1 - rho^2) at rho = r (``_g_and_h``).

    ``r`` should be float64 where available (see ``in_float64``). The identity
    d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2) links the derivative to the mean: E[mu.x] = rho H.
    """
    g, h, one_m_x = _g_and_h(r, m)
    kl = g * _c(m - 1.0, g)
    if not derivative:
        return kl, None
    return kl, torch.addcdiv(_c(0.0, r), r * h, one_m_x, value=2.0 * (m - 1))


class _SphericalCauchyKL(torch.autograd.Function):
    """KL with an analytic derivative computed in the same pass (the KL is on the hot path).

    First-order backward multiplies by the saved derivative. Under ``create_graph=True`` the
    backward recomputes the derivative with differentiable operations on ``rho``, so double
    backward is exact as well.
    """

    @staticmethod
    def forward(ctx, rho: torch.Tensor, m: int) -> torch.Tensor:
        ctx.m = m
        kl, dkl = _kl_and_derivative(in_float64(rho), m, ctx.needs_input_grad[0])
        ctx.save_for_backward(rho, None if dkl is None else dkl.to(rho.dtype))
        return kl.to(rho.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        rho, dkl = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate the derivative too
            dkl = _kl_and_derivative(in_float64(rho), ctx.m, True)[1].to(rho.dtype)
        return grad * dkl, None


def spherical_cauchy_kl_to_uniform(rho: torch.Tensor, m: int) -> torch.Tensor:
    """KL(spherical Cauchy(mu, rho) || uniform on S^(m-1)), elementwise in ``rho``; m is ambient.

    KL / (m - 1) = -log(1 - rho^2) - sum_k c_k rho^(2k) / k (``_g_and_h``: exact series, polynomials for
    even m, closed forms for m = 3, 5, 7), evaluated in float64 where available and returned in ``rho``'s
    dtype. Measured against mpmath at 30+ digits (tests/distributions/test_mpmath_exact.py): relative
    error <= 1e-13 in float64 (KL and its derivative) for m = 2 ... 1025 and rho from 1e-6 to 1 - 1e-12;
    in float32 within a few float32 ulps. Finite and differentiable (analytic derivative) on all of [0, 1).
    """
    check_ambient_dim(m)
    return _SphericalCauchyKL.apply(rho, m)


def spherical_cauchy_mean_resultant(rho: torch.Tensor, m: int) -> torch.Tensor:
    """E[mu.x] for the spherical Cauchy on S^(m-1) (m ambient), elementwise in ``rho``.

    From the Moebius map, E[mu.x] = rho + (1 - rho^2) F'(rho) / 2 with F(rho) = E_u log|u + rho mu|^2,
    which is the identity d KL / d rho = 2 (m - 1) E[mu.x] / (1 - rho^2); with the series of
    ``_g_and_h``, E[mu.x] = rho H, H = (1 - c_1) + sum_k (c_k - c_(k+1)) rho^(2k) >= 1, so no cancellation.
    It rises from 2 (m - 1) rho / m near rho = 0 to 1 at rho = 1. Within 1e-13 relative of mpmath in float64
    (same grid as the KL). Differentiable with ordinary autograd.
    """
    check_ambient_dim(m)
    if m == 2:
        return rho.clone()
    r = in_float64(rho)
    return (r * _g_and_h(r, m)[1]).to(rho.dtype)


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
    one = _c(1.0, rho)
    one_m_r2 = (one - rho) * (rho + one)
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
        # 1 + rho^2 - 2 rho mu.x = (1 - rho)^2 + rho |x - mu|^2 on the sphere; the right-hand side
        # keeps its digits when x is near mu and rho near 1, where the left-hand side cancels. The scalar part in
        # float64 (where the device has it), rounded once: in float32 its sum of logs was off by ~4e-7 (m = 11).
        diff = value - self.loc
        dist2 = in_float64(rowdot(diff, diff))
        rho = in_float64(self.scale)
        log_ratio = torch.log1p(-rho) + torch.log1p(rho) - torch.log((1.0 - rho).square() + rho * dist2)
        return ((self.m - 1) * log_ratio - log_sphere_surface(self.m)).to(value.dtype)

    def kl_to_uniform(self) -> torch.Tensor:
        return spherical_cauchy_kl_to_uniform(self.scale, self.m)

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        return spherical_cauchy_mean_resultant(self.scale, self.m)
