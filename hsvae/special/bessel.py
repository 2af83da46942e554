"""Modified Bessel functions of the first kind, I_v(x), in log space, in pure PyTorch.

What the von Mises-Fisher distribution needs, for a python-scalar order ``v >= 0`` and a
tensor ``x >= 0`` of any shape, on the tensor's device and in its dtype:

* :func:`log_bessel_iv` -- log I_v(x);
* :func:`bessel_iv_ratio` -- R_v(x) = I_(v+1)(x) / I_v(x) (the vMF's mean resultant length
  A_m(kappa) is ``bessel_iv_ratio(m / 2 - 1, kappa)``);
* :func:`bessel_iv_terms` -- everything at once, in the cancellation-free forms the vMF uses:
  ``log_hyp0f1`` = L = log[Gamma(v+1) (2/x)^v I_v(x)] = log 0F1(; v+1; x^2/4) (>= 0, ~ x^2/(4(v+1))
  for small x, ~ x for large x), ``log_hyp0f1_scaled`` = L - x, ``ratio`` = R and
  ``ratio_complement`` = 1 - R, each accurate to a few ulps *of itself* (so that 1 - R is not
  1 minus a number close to one, and L - x is not a difference of two huge numbers).

All are differentiable in x through one custom autograd node (d L/dx = R,
dR/dx = 1 - R^2 - (2v + 1) R / x, evaluated in forms that do not cancel); they are not
differentiable in v. Second derivatives are not implemented (``once_differentiable``).

Methods, chosen per call from v (a python number) and, where two are needed, per element
from x -- each only where it is accurate to ~1e-14 (float64) or ~1e-9 (float32):

* v >= 12 (float64; 8 in float32): Debye's uniform asymptotic expansion,
  I_v(v z) ~ e^(v eta) / (sqrt(2 pi v) (1+z^2)^(1/4)) sum_k u_k(p) / v^k, p = (1 + z^2)^(-1/2)
  (DLMF 10.41.3), accurate for *every* x > 0 at these orders; the number of terms (at most 16)
  is picked from v and the dtype. The ratio comes from the companion expansion of I_v'(v z)
  (DLMF 10.41.4), rewritten so that nothing cancels. One branch, no per-element selection.
* smaller v: the power series of 0F1 (positive terms, no cancellation) for x < X(v), and Hankel's
  large-argument expansion (DLMF 10.40.1) for x >= X(v), where X(v) (about 10 to 22) is the
  smallest argument at which Hankel's series, truncated at its smallest term, is accurate to the
  tolerance for both orders v and v + 1 without large alternating terms.

  On CPU only the branch(es) some element needs are evaluated (reading the mask back is free
  there); on accelerators both are, and ``torch.where`` picks per element, with no host sync.

Scaled forms keep everything finite in float32 over x in [0, 1e7] and v up to several thousand
(the series and Hankel polynomials are evaluated in powers of x/X or X/x, never of x). float16
and bfloat16 inputs are computed in float32 and cast back. Cost: the work is a few dozen
element-wise ops whatever the batch, so per-op overhead dominates on CPU; polynomials are one
cumulative product plus one small matrix product, and constants are cached 0-dim tensors.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from .precision import autocast_off

__all__ = [
    "BesselIvTerms",
    "bessel_iv_ratio",
    "bessel_iv_terms",
    "evaluate_forms",
    "log_bessel_iv",
    "log_bessel_iv_scaled",
    "one_side",
    "prepare_argument",
    "scalar",
]

#: Orders at or above this use Debye's expansion, below it series + Hankel (float64, float32).
#: float32 switches lower because Hankel's series near its switch point has large alternating
#: terms for larger orders (it would lose digits to cancellation); Debye at v >= 8 needs only
#: ~9 terms for float32 accuracy, whose polynomial evaluation is well conditioned there. In float64, at v = 12-13.5
#: the 16 Debye terms leave the ratio's derivative up to 2e-13 off (d KL / d kappa of the vMF at m = 26-28, against
#: mpmath); series + Hankel keep it within 1e-13 up to v = 13.5, and above 14 Debye's truncation is below 2e-15.
DEBYE_MIN_ORDER = {torch.float64: 14.0, torch.float32: 8.0}
#: Most Debye terms ever used (u_0 .. u_16); v = 14 in float64 needs 15.
_DEBYE_MAX_TERMS = 16


class BesselIvTerms(NamedTuple):
    """The pieces of I_v(x) that the vMF needs, each accurate relative to itself.

    Attributes:
        log_hyp0f1: L = log I_v(x) - v log(x/2) + lgamma(v+1) = log 0F1(; v+1; x^2/4).
        log_hyp0f1_scaled: L - x.
        ratio: R = I_(v+1)(x) / I_v(x).
        ratio_complement: 1 - R.
    """

    log_hyp0f1: torch.Tensor
    log_hyp0f1_scaled: torch.Tensor
    ratio: torch.Tensor
    ratio_complement: torch.Tensor


# --------------------------------------------------------------------------------------------
# Coefficients (python, exact rational arithmetic where it matters; cached per order and dtype)
# --------------------------------------------------------------------------------------------

_Poly = dict  # power -> Fraction


def _poly_deriv(poly: _Poly) -> _Poly:
    return {j - 1: c * j for j, c in poly.items() if j > 0}


def _poly_mul(a: _Poly, b: _Poly) -> _Poly:
    out: _Poly = {}
    for i, ca in a.items():
        for j, cb in b.items():
            out[i + j] = out.get(i + j, 0) + ca * cb
    return out


def _poly_add(a: _Poly, b: _Poly) -> _Poly:
    out = dict(a)
    for j, c in b.items():
        out[j] = out.get(j, 0) + c
    return out


@functools.lru_cache(maxsize=1)
def _debye_polynomials() -> tuple[list[_Poly], list[_Poly]]:
    """Debye's u_k(p) (DLMF 10.41.10) and w_k(p) = (v_k(p) - u_k(p)) / (1 - p^2), k = 0..16(+1).

    u_(k+1) = p^2 (1 - p^2) u_k' / 2 + (1/8) int_0^p (1 - 5 t^2) u_k(t) dt, and from DLMF 10.41.11,
    v_k - u_k = -(1 - p^2) p (u_(k-1) / 2 + p u_(k-1)'), so w_k = -p (u_(k-1) / 2 + p u_(k-1)').
    """
    half, eighth = Fraction(1, 2), Fraction(1, 8)
    u: list[_Poly] = [{0: Fraction(1)}]
    for _ in range(_DEBYE_MAX_TERMS):
        prev = u[-1]
        term1 = _poly_mul({2: half, 4: -half}, _poly_deriv(prev))
        integrand = _poly_mul({0: Fraction(1), 2: Fraction(-5)}, prev)
        term2 = {j + 1: eighth * c / (j + 1) for j, c in integrand.items()}
        u.append(_poly_add(term1, term2))
    w: list[_Poly] = [{}]
    for k in range(1, _DEBYE_MAX_TERMS + 2):
        prev = u[k - 1]
        inner = _poly_add({j: half * c for j, c in prev.items()}, _poly_mul({1: Fraction(1)}, _poly_deriv(prev)))
        w.append({j + 1: -c for j, c in inner.items()})
    return u, w


#: max over p in [0, 1] of |u_k(p)|, k = 0..16 (a 2001-point grid, rounded up; a test re-derives
#: them from the polynomials). The first omitted term bounds the Debye truncation error.
_DEBYE_TERM_BOUNDS = (
    1.0, 0.0834, 0.0327, 0.0164, 0.0202, 0.0208, 0.0404, 0.0654, 0.171, 0.382,
    1.24, 3.56, 13.8, 48.2, 218.0, 899.0, 4631.0,
)


def _tolerance(dtype: torch.dtype) -> float:
    """Truncation tolerance of every expansion: well below the dtype's rounding error."""
    return 1e-15 if dtype == torch.float64 else 2e-9


def _hankel_condition_limit(dtype: torch.dtype) -> float:
    """Largest allowed sum_k |h_k| / x^k at the switch point (digits lost to cancellation)."""
    return 100.0 if dtype == torch.float64 else 8.0


class _DebyePlan(NamedTuple):
    coefficients: list[list[float]]  # (degree + 1) x 5: columns U, W, Qn, U', W'


class _SmallOrderPlan(NamedTuple):
    switch: float  # X(v): series below, Hankel at and above
    series: list[list[float]]  # Ks x 3: columns S0 - 1, S1, S2 (0F1(; v+1+j; y), j = 0, 1, 2) in powers of (x/X)^2
    hankel: list[list[float]]  # Kh x 4: columns H, D, dH/dt, dD/dt in powers of X/x


@functools.lru_cache(maxsize=256)
def _debye_plan(v: float, tol: float) -> _DebyePlan:
    u, w = _debye_polynomials()
    bounds = _DEBYE_TERM_BOUNDS
    # Truncate after u_K when the first omitted term, max|u_(K+1)| / v^(K+1), is below tol.
    n_terms = next(
        (k for k in range(1, _DEBYE_MAX_TERMS) if bounds[k + 1] / v ** (k + 1) < tol), _DEBYE_MAX_TERMS
    )
    inv_v = Fraction(1) / Fraction(v)
    U: dict[int, Fraction] = {}
    W: dict[int, Fraction] = {}
    for k in range(n_terms + 1):
        for j, c in u[k].items():
            U[j] = U.get(j, 0) + c * inv_v**k
    for k in range(1, n_terms + 2):
        for j, c in w[k].items():
            W[j] = W.get(j, 0) + c * inv_v**k
    degree = max(max(U), max(W))
    u_at_one = sum(U.values())
    # U(p) - U(1) = -(1 - p) Q(p) with q_i = sum_{j > i} alpha_j; store Qn = -Q / U(1) so that
    # log(U(p) / U(1)) = log1p((1 - p) Qn(p)) without cancelling for p near 1 (x << v).
    qn = {i: -sum(U.get(j, 0) for j in range(i + 1, degree + 1)) / u_at_one for i in range(degree)}
    du, dw = _poly_deriv(U), _poly_deriv(W)
    rows = []
    for j in range(degree + 1):
        rows.append([float(poly.get(j, 0)) for poly in (U, W, qn, du, dw)])
    return _DebyePlan(rows)


def _hankel_coefficients(nu: float, n: int) -> list[float]:
    """h_k = (-1)^k a_k(nu), I_nu(x) ~ e^x / sqrt(2 pi x) sum_k h_k / x^k (DLMF 10.40.1)."""
    out, a = [1.0], 1.0
    four_nu2 = 4.0 * nu * nu
    for k in range(1, n):
        a *= -(four_nu2 - (2 * k - 1) ** 2) / (8.0 * k)
        out.append(a)
    return out


def _hankel_term_sizes(nu: float, x: float, n: int) -> list[float]:
    """|h_k| / x^k for k = 0..n-1."""
    sizes, term = [1.0], 1.0
    four_nu2 = 4.0 * nu * nu
    for k in range(1, n):
        term *= abs(four_nu2 - (2 * k - 1) ** 2) / (8.0 * k * x)
        sizes.append(term)
    return sizes


@functools.lru_cache(maxsize=256)
def _small_order_plan(v: float, tol: float, condition_limit: float) -> _SmallOrderPlan:
    # Smallest switch point X at which Hankel's series for both v and v + 1, truncated after n
    # terms, has every omitted term up to its turning point below tol (for real x > 0 the error
    # is bounded by the first omitted term, DLMF 10.40.ii); also the neglected exponentially
    # small part, ~e^(-2x), must be below tol, and the sum of the terms' sizes (the factor by
    # which cancellation amplifies rounding) below condition_limit.
    k_max = 48
    x = max(1.0, 0.5 * math.log(1.0 / tol))
    while True:
        sizes = [_hankel_term_sizes(nu, x, k_max) for nu in (v, v + 1.0)]
        firsts = [next((k for k, s in enumerate(sz) if s < tol), None) for sz in sizes]
        if None not in firsts:
            n_hankel = max(firsts)
            if (
                n_hankel + 1 < k_max
                and all(max(sz[f : n_hankel + 1]) < tol for sz, f in zip(sizes, firsts))
                and all(sum(sz[:n_hankel]) < condition_limit for sz in sizes)
            ):
                break
        x *= 1.05
    switch = x
    h0 = _hankel_coefficients(v, n_hankel + 1)
    h1 = _hankel_coefficients(v + 1.0, n_hankel + 1)
    hankel = []
    for j in range(n_hankel):
        scale = switch ** (-j)  # powers of X/x, so nothing overflows in float32
        dh = (j + 1) * h0[j + 1] * switch ** (-j)
        dd = (j + 1) * (h0[j + 1] - h1[j + 1]) * switch ** (-j)
        hankel.append([h0[j] * scale, (h0[j] - h1[j]) * scale, dh, dd])
    # Power series of 0F1(; v+1; y), y = x^2/4, in powers of y/Y, Y = X^2/4: all terms positive,
    # so summing them is accurate; stop when the tail is below tol * 1e-2 of the sum at x = X.
    big_y = switch * switch / 4.0
    series, log_term, total, j = [], 0.0, 0.0, 0
    while True:
        term = math.exp(log_term)
        total += term
        s1 = term * (v + 1.0) / (v + 1.0 + j)
        series.append([term if j > 0 else 0.0, s1, s1 * (v + 2.0) / (v + 2.0 + j)])
        j += 1
        ratio = big_y / (j * (v + j))
        log_term += math.log(big_y) - math.log(j) - math.log(v + j)
        if ratio < 0.5 and math.exp(log_term) < 1e-2 * tol * total:
            break
    return _SmallOrderPlan(switch, series, hankel)


@functools.lru_cache(maxsize=4096)
def scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A cached 0-dim tensor: arithmetic with it skips the per-op conversion of a python float.

    (For float32 tensors on CPU, ``t * 0.5`` costs about twice ``t * scalar(0.5, ...)``: torch
    wraps the float in a float64 tensor and converts it on every call. The hot paths here are
    dominated by such per-op overheads, not by arithmetic.)
    """
    return torch.tensor(value, dtype=dtype, device=device)


class _Evaluator:
    """Everything one (order, dtype, device) needs, built once: the method, coefficients and
    the constants (as 0-dim tensors) of its formulas."""

    def __init__(self, v: float, dtype: torch.dtype, device: torch.device):
        tol = _tolerance(dtype)

        def rows(columns: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
            # (constant terms, the rest), split once here rather than sliced in every call
            coef = torch.tensor(columns, dtype=dtype, device=device).t()
            return coef[:, :1].contiguous(), coef[:, 1:].contiguous()

        def c(value: float) -> torch.Tensor:
            return scalar(value, dtype, device)

        self.use_debye = v >= DEBYE_MIN_ORDER[dtype]
        self.one, self.half, self.quarter = c(1.0), c(0.5), c(0.25)
        self.v, self.two_v_plus_one = c(v), c(2.0 * v + 1.0)
        if self.use_debye:
            self.switch = math.inf
            self.coef = rows(_debye_plan(v, tol).coefficients)  # U, W, Qn, U', W'
            self.inv_v = c(1.0 / v)
        else:
            plan = _small_order_plan(v, tol, _hankel_condition_limit(dtype))
            self.switch = plan.switch
            self.switch_t = c(plan.switch)
            self.inv_switch = c(1.0 / plan.switch)
            # S0 - 1, S0, S1 / (2v + 2), S2 / ((2v + 2)(2v + 4)): what _series divides by, its constant factors
            # folded in (S0 once more as its own row: no op to add the 1)
            s1_scale, s2_scale = 1.0 / (2.0 * v + 2.0), 1.0 / ((2.0 * v + 2.0) * (2.0 * v + 4.0))
            self.series = rows([[s0, s0 + (1.0 if j == 0 else 0.0), s1 * s1_scale, s2 * s2_scale]
                                for j, (s0, s1, s2) in enumerate(plan.series)])
            # H, D, dH/dt / X^2, dD/dt / X^2 (in powers of u = X/x, with t = 1/x: t^2 = u^2 / X^2)
            inv_x2 = 1.0 / (plan.switch * plan.switch)
            self.hankel = rows([[h, d, dh * inv_x2, dd * inv_x2] for h, d, dh, dd in plan.hankel])
            self.v_plus_half = c(v + 0.5)
            self.hankel_const = c(math.lgamma(v + 1.0) + v * math.log(2.0) - 0.5 * math.log(2.0 * math.pi))


@functools.lru_cache(maxsize=512)
def _evaluator(v: float, dtype: torch.dtype, device: torch.device) -> _Evaluator:
    return _Evaluator(v, dtype, device)


def _polynomials(t: torch.Tensor, coef: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """sum_j c[i, j] t^j for every row i of c, for a 1-d ``t``; ``coef`` = (c[:, :1], c[:, 1:]).

    Two ops: the powers t^1..t^(n-1) (a cumulative product), then one small matrix product laid
    out as (k, n) @ (n, B), several times faster on CPU than (B, n) @ (n, k).
    """
    head, tail = coef
    n = tail.shape[1]
    if n == 0:
        return list(head.expand(-1, t.shape[0]).unbind(0))
    powers = t.unsqueeze(-1).expand(t.shape[0], n).cumprod(-1)
    with autocast_off(t):
        return list(torch.addmm(head, tail, powers.t()).unbind(0))


# --------------------------------------------------------------------------------------------
# Evaluation: each method returns [L, L - x, R, 1 - R] (+ dR/dx when a gradient is needed)
# --------------------------------------------------------------------------------------------


def _debye(ev: _Evaluator, x: torch.Tensor, with_derivative: bool) -> list[torch.Tensor]:
    one = ev.one
    z = x * ev.inv_v
    z2 = z * z
    p = torch.rsqrt(z2 + one)
    zp = z * p
    onep = p + one
    one_zp = zp + one
    a = z2 * p / onep  # = 1/p - 1, without cancellation
    omp = a * p  # = 1 - p
    U, W, Qn, dU, dW = _polynomials(p, ev.coef)
    w_over_u = W / U
    G = onep.reciprocal() + w_over_u
    ratio = zp * G
    # 1 - R = [1 - zp/(1+p)] - zp W/U with 1 - zp/(1+p) = (p + p^2/(1+zp))/(1+p): both terms
    # are positive for large z, where R -> 1.
    complement = torch.addcdiv(p, p * p, one_zp) / onep - zp * w_over_u
    # L = v (1/p - 1) + v log(2p/(1+p)) + (1/2) log p + log(U(p)/U(1)), each log a log1p of a
    # quantity known to full relative accuracy, so nothing cancels for any z.
    rest = torch.log1p(omp * Qn) - ev.v * torch.log1p(ev.half * a) - ev.quarter * torch.log1p(z2)
    log_f = torch.addcmul(rest, ev.v, a)
    # L - x: v (1/p - 1 - z) = -v (zp + 1 - p) / (1 + zp).
    log_f_scaled = rest - ev.v * (zp + omp) / one_zp
    out = [log_f, log_f_scaled, ratio, complement]
    if with_derivative:
        # dR/dz = p^3 G + z^2 p^4 [1/(1+p)^2 - (W'U - W U')/U^2]: no cancellation at large z.
        dG = (onep * onep).reciprocal() - (dW - w_over_u * dU) / U
        p3 = p * p * p
        out.append(torch.addcmul(p3 * G, z2 * p * p3, dG) * ev.inv_v)
    return out


def _series(ev: _Evaluator, x: torch.Tensor, with_derivative: bool, lean: bool = False) -> list[torch.Tensor]:
    scaled = x * ev.inv_switch
    s0_minus_1, s0, s1, s2 = _polynomials(scaled * scaled, ev.series)  # (S1, S2 scaled: see _Evaluator)
    log_f = torch.log1p(s0_minus_1)
    ratio_over_x = s1 / s0
    ratio = x * ratio_over_x
    out = [log_f, None, ratio, None] if lean else [log_f, log_f - x, ratio, ev.one - ratio]
    if with_derivative:
        # R' = R (1/x - R + R_(v+1)), R_(v+1) = I_(v+2)/I_(v+1) = x S2 / ((2v+4) S1) (from the recurrence
        # I_(v+2) = I_v - (2v+2)/x I_(v+1)): R/x dominates and the subtracted R (R - R_(v+1)) is a few times
        # smaller here (x < X), so nothing cancels; the textbook 1 - R^2 - (2v+1) R/x lost ~2 digits at
        # v ~ 12, x ~ 10 (2e-13 in d KL / d kappa at m = 27).
        ratio_next = x * s2 / s1
        out.append(torch.addcmul(ratio_over_x, ratio, ratio - ratio_next, value=-1.0))
    return out


def _hankel(ev: _Evaluator, x: torch.Tensor, with_derivative: bool, lean: bool = False) -> list[torch.Tensor]:
    u = ev.switch_t / x
    H, D, dH, dD = _polynomials(u, ev.hankel)  # (dH, dD scaled by 1/X^2: see _Evaluator)
    complement = D / H
    # L - x = log(I_v(x) e^-x) - v log(x/2) + lgamma(v+1), I_v(x) e^-x = H / sqrt(2 pi x).
    log_f_scaled = torch.log(H) - ev.v_plus_half * torch.log(x) + ev.hankel_const
    out = [None, log_f_scaled, None, complement] if lean else [log_f_scaled + x, log_f_scaled, ev.one - complement, complement]
    if with_derivative:
        # R = 1 - D/H in t = 1/x: dR/dx = t^2 (D_t H - D H_t) / H^2 = t^2 (D_t - (D/H) H_t) / H.
        out.append(torch.addcmul(dD, complement, dH, value=-1.0) * (u * u) / H)
    return out



def one_side(x: torch.Tensor, switch: float) -> str | None:
    """``"below"`` when every element of ``x`` lies below ``switch`` (or there is none), ``"above"`` when every one
    lies at or above it, else None (both sides, or a NaN, which fails both tests): so that a two-branch function
    evaluates only the branch its elements need. Read on the CPU only, where a host sync is free; on an
    accelerator and in a compiled graph (where reading a value would break it) always None: both branches run,
    on clamped arguments, selected per element."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    if x.numel() == 0 or float(x.max()) < switch:
        return "below"
    if float(x.min()) >= switch:
        return "above"
    return None

def evaluate_forms(v: float, x: torch.Tensor, with_derivative: bool, reduce=None) -> list[torch.Tensor]:
    """[L, L - x, R, 1 - R] (+ dR/dx) for a python order v and a tensor x >= 0.

    ``reduce(x, outputs, method)``, if given, maps each method's outputs (method: "debye",
    "series" or "hankel") to what the caller needs before the per-element selection, so that a
    caller needing fewer quantities selects fewer (the vMF's KL picks its own form per method). It
    then gets only the forms that method's KL uses (the others are None): L and R from "series",
    L - x and 1 - R from "hankel", everything from "debye".
    """
    if x.dim() != 1:
        return [t.reshape(x.shape) for t in evaluate_forms(v, x.reshape(-1), with_derivative, reduce)]
    if reduce is None:
        reduce = _all_outputs
    ev = _evaluator(v, x.dtype, x.device)
    if ev.use_debye:
        return reduce(x, _debye(ev, x, with_derivative), "debye")
    lean = reduce is not _all_outputs
    side = one_side(x, ev.switch)
    if side == "below":
        return reduce(x, _series(ev, x, with_derivative, lean), "series")
    if side == "above":
        return reduce(x, _hankel(ev, x, with_derivative, lean), "hankel")
    # Both regions (or an accelerator, where we avoid the sync): clamp each branch's input into
    # its own region so the unused one stays finite, then select per element.
    below = x < ev.switch
    x_low, x_high = x.clamp_max(ev.switch), x.clamp_min(ev.switch)
    low = reduce(x_low, _series(ev, x_low, with_derivative, lean), "series")
    high = reduce(x_high, _hankel(ev, x_high, with_derivative, lean), "hankel")
    both = torch.where(below, torch.stack(low), torch.stack(high))
    return list(both.unbind(0))


def _all_outputs(x: torch.Tensor, outputs: list[torch.Tensor], method: str) -> list[torch.Tensor]:
    return outputs


class _BesselIvTermsFunction(torch.autograd.Function):
    """x -> (L, L - x, R, 1 - R) with dL/dx = R, d(L - x)/dx = -(1 - R), dR/dx = R'."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, v: float):
        with_derivative = x.requires_grad
        out = evaluate_forms(v, x, with_derivative)
        if with_derivative:
            ctx.save_for_backward(out[2], out[3], out[4])
        ctx.set_materialize_grads(False)
        return tuple(out[:4])

    @staticmethod
    @once_differentiable
    def backward(ctx, g_log_f, g_log_f_scaled, g_ratio, g_complement):
        ratio, complement, d_ratio = ctx.saved_tensors
        grad = None
        if g_log_f is not None:
            grad = g_log_f * ratio
        if g_log_f_scaled is not None:
            term = g_log_f_scaled * complement
            grad = -term if grad is None else grad - term
        if g_ratio is not None or g_complement is not None:
            g = g_ratio if g_complement is None else (-g_complement if g_ratio is None else g_ratio - g_complement)
            grad = g * d_ratio if grad is None else torch.addcmul(grad, g, d_ratio)
        return grad, None


def _check_order(v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"order v must be a python number (or a one-element tensor), got shape {tuple(v.shape)}")
        v = v.item()
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"order v must be a real number >= 0, got {v!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"order v must be a finite real number >= 0, got v={v!r}")
    return v


def prepare_argument(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """``(x as a floating tensor in the computation dtype, the dtype to return results in)``: half precisions
    compute in float32, integers in the default dtype."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
    dtype = x.dtype
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
        x = x.to(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x, dtype


def _terms(v: float, x) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.dtype]:
    """(L, L - x, R, 1 - R) in the computation dtype, the prepared x, and the caller's dtype."""
    v = _check_order(v)
    x, dtype = prepare_argument(x)
    return _BesselIvTermsFunction.apply(x, v), x, dtype


def bessel_iv_terms(v: float, x: torch.Tensor) -> BesselIvTerms:
    """L = log 0F1(; v+1; x^2/4), L - x, R = I_(v+1)/I_v and 1 - R, all differentiable in x.

    ``v``: a python number >= 0 (one order for the whole tensor); ``x``: a tensor of arguments
    >= 0 (any shape; negative x gives NaN). See :class:`BesselIvTerms` for the definitions;
    log I_v(x) = L + v log(x/2) - lgamma(v+1).
    """
    terms, _, dtype = _terms(v, x)
    return BesselIvTerms(*(t.to(dtype) for t in terms))


def log_bessel_iv(v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v(x) for a python order v >= 0 and a tensor x >= 0; d/dx = I_(v+1)(x)/I_v(x) + v/x.

    Finite for every x > 0 in the dtype's range (x = 0 gives -inf for v > 0 and 0 for v = 0).
    """
    (log_f, _, _, _), x, dtype = _terms(v, x)
    return _with_prefactor(log_f, float(v), x).to(dtype)


def log_bessel_iv_scaled(v: float, x: torch.Tensor) -> torch.Tensor:
    """log(I_v(x) e^(-x)) = log I_v(x) - x, without forming the (possibly huge) log I_v(x)."""
    (_, log_f_scaled, _, _), x, dtype = _terms(v, x)
    return _with_prefactor(log_f_scaled, float(v), x).to(dtype)


def _with_prefactor(log_f: torch.Tensor, v: float, x: torch.Tensor) -> torch.Tensor:
    """log I_v = log 0F1-part + v log(x/2) - lgamma(v + 1); the prefactor vanishes at v = 0."""
    if v == 0.0:
        return log_f
    return log_f + v * torch.log(0.5 * x) - math.lgamma(v + 1.0)


def bessel_iv_ratio(v: float, x: torch.Tensor) -> torch.Tensor:
    """R_v(x) = I_(v+1)(x) / I_v(x) for a python order v >= 0 and a tensor x >= 0.

    dR/dx = 1 - R^2 - (2v + 1) R / x (evaluated in a form that does not cancel at large x).
    For the von Mises-Fisher on S^(m-1): A_m(kappa) = bessel_iv_ratio(m / 2 - 1, kappa).
    """
    (_, _, ratio, _), _, dtype = _terms(v, x)
    return ratio.to(dtype)
