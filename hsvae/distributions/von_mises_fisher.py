"""The von Mises-Fisher distribution on the sphere S^(m-1), with reparameterised sampling.

Dimension convention (as everywhere in this package): the distribution lives on the unit sphere
S^(m-1) in R^m; m, the *ambient* dimension, is the size of the last axis of ``loc``;
``batch_shape`` is ``loc.shape[:-1]`` (broadcast with ``scale``) and ``event_shape == (m,)``.
``scale`` is the concentration kappa > 0.

Density: f(x) = C_m(kappa) exp(kappa loc.x), log C_m = (m/2 - 1) log kappa - (m/2) log(2 pi)
- log I_(m/2-1)(kappa). Everything is computed from :func:`hsvae.special.bessel_iv_terms` with
v = m/2 - 1, in forms that neither overflow nor cancel: with L = log 0F1(; m/2; kappa^2/4)
= log I_v(kappa) - v log(kappa/2) + lgamma(v+1) and A = I_(v+1)/I_v,

* log C_m(kappa) + log|S^(m-1)| = -L, so log f(x) = kappa (loc.x - 1) - (L - kappa) - log|S^(m-1)|;
* KL(vMF || uniform) = kappa A - L (used for kappa < v + 1, where it is ~kappa^2 / (2m) and both
  terms are small) = -kappa (1 - A) - (L - kappa) (used above, where kappa A and L are both ~kappa);
* entropy = log|S^(m-1)| - KL.

At m = 3 (v = 1/2, where I_v and I_(v+1) are elementary) the KL and its derivative skip the Bessel module:
KL = kappa coth kappa - 1 - log(sinh kappa / kappa), as a power series in kappa^2 below kappa = 1 and in
exp(-2 kappa) above (see :func:`_kl_m3`).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable
from torch.distributions import constraints

from hsvae.special import bessel_iv_terms, evaluate_forms, one_side, prepare_argument, scalar

from ._sphere import log_sphere_surface, unit_vector
from ._spherical_utils import SphericalDistribution, fused_sampler_node, in_float64, rowdot

__all__ = ["VonMisesFisher", "von_mises_fisher_kl_to_uniform"]

# --------------------------------------------------------------------------------------------
# Wood's (1994) rejection sampler for w = loc.x, vectorised in blocks
# --------------------------------------------------------------------------------------------

#: Lower bounds on the probability that one of Wood's proposals is accepted, by quadrature of
#: E_e[exp((m-1)(log tau - tau + 1))] (rounded down by >= 0.005): it falls with r = kappa/(m-1),
#: to 0.658 (m = 2) ... 0.707 (m -> inf) as r -> inf, and barely depends on m for r <= 1.
#: Rows: (largest r, bounds for m = 2, 3, 4, 5..9, >= 10).
_WOOD_ACCEPTANCE = (
    (0.1, (0.99, 0.99, 0.99, 0.99, 0.99)),
    (0.3, (0.96, 0.96, 0.96, 0.96, 0.96)),
    (1.0, (0.84, 0.84, 0.84, 0.84, 0.84)),
    (3.0, (0.715, 0.73, 0.74, 0.745, 0.75)),
    (10.0, (0.665, 0.69, 0.70, 0.705, 0.713)),
    (math.inf, (0.652, 0.674, 0.683, 0.688, 0.695)),
)
#: Lower bounds on the acceptance of the Marsaglia-Tsang gamma proposal for shape (m-1)/2 (it
#: rises with the shape: 0.952 at 1, 0.973 at 1.5, 0.982 at 2, 0.994 at 5, 0.999 at 32); m = 2
#: needs no gamma, and neither does m = 5 (see :func:`_propose`). Rows: (smallest m, bound).
_GAMMA_ACCEPTANCE = ((61, 0.998), (10, 0.99), (5, 0.98), (4, 0.97), (3, 0.95), (2, 1.0))
#: Expected rows left unaccepted by the first CPU block and by each further one: a block costs its ~20 ops, not
#: its length, so the first is long enough that a second is rarely needed, and that one is sized to finish.
_CPU_LEFTOVER_ROWS = 0.2
_CPU_RETRY_LEFTOVER_ROWS = 1e-3
#: Probability, per call, that the sync-free (accelerator) path leaves any row unaccepted.
_ACCELERATOR_FAILURE_PROBABILITY = 1e-12
#: Cap on proposals held in memory at once on the sync-free path (rows x block).
_ACCELERATOR_MAX_BLOCK_ELEMENTS = 1 << 22
#: A CPU loop that has not accepted every row after this many rounds is not going to (NaN input).
_MAX_ROUNDS = 64


def _acceptance_lower_bound(m: int, kappa_max: float) -> float:
    """A lower bound on the probability that one combined (gamma, Wood) proposal is accepted,
    for every kappa <= kappa_max."""
    r = kappa_max / (m - 1)
    column = 0 if m == 2 else 1 if m == 3 else 2 if m == 4 else 3 if m < 10 else 4
    wood = next(bounds[column] for limit, bounds in _WOOD_ACCEPTANCE if r <= limit)
    # (m = 5 draws its Beta proposal by the inverse CDF, without the Gamma proposal's rejection)
    gamma = 1.0 if m == 5 else next(bound for smallest, bound in _GAMMA_ACCEPTANCE if m >= smallest)
    return wood * gamma


class _Constants:
    """The 0-dim tensor constants of the sampler's formulas for one (m, dtype, device): tensor
    arithmetic with them avoids torch's per-op conversion of python floats (see
    :func:`hsvae.special.bessel.scalar`)."""

    def __init__(self, m: int, dtype: torch.dtype, device: torch.device):
        def c(value: float) -> torch.Tensor:
            return scalar(value, dtype, device)

        n = m - 1
        self.n, self.n_squared = c(float(n)), c(float(n * n))
        self.half, self.minus_half, self.one, self.two, self.minus_two = c(0.5), c(-0.5), c(1.0), c(2.0), c(-2.0)
        self.minus_one, self.third = c(-1.0), c(1.0 / 3.0)
        self.tiny = torch.finfo(dtype).tiny
        if m > 2:  # Marsaglia-Tsang for Gamma((m-1)/2): d = shape - 1/3, c = 1/(3 sqrt(d))
            self.gamma_d = 0.5 * n - 1.0 / 3.0
            self.gamma_d_t, self.gamma_two_d = c(self.gamma_d), c(2.0 * self.gamma_d)
            self.gamma_c = c(1.0 / (3.0 * math.sqrt(self.gamma_d)))


@functools.lru_cache(maxsize=256)
def _constants(m: int, dtype: torch.dtype, device: torch.device) -> _Constants:
    return _Constants(m, dtype, device)


def _wood_root_and_b(kappa: torch.Tensor, consts: _Constants) -> tuple[torch.Tensor, torch.Tensor]:
    """sqrt(4 kappa^2 + n^2) and b = n / (2 kappa + sqrt(4 kappa^2 + n^2)), n = m - 1.

    (This b has no cancellation; the textbook b = (-2 kappa + sqrt(4 kappa^2 + n^2)) / n loses
    every digit when kappa >> n, and a Taylor approximation of it biases the samples.)
    """
    root = torch.sqrt(torch.addcmul(consts.n_squared, kappa, kappa, value=4.0))
    return root, consts.n / torch.add(root, kappa, alpha=2.0)


def _wood_b(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """Wood's b for the ambient dimension m (see :func:`_wood_root_and_b`)."""
    return _wood_root_and_b(kappa, _constants(m, kappa.dtype, kappa.device))[1]


def _propose(b: torch.Tensor, m: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``block`` proposals per row: (t = 2e - 1, accepted as 1.0 / 0.0), each of shape (block, rows).

    ``b`` (Wood's b) has shape (rows,), broadcast along the outer axis (on the CPU, along the inner one it costs
    ~4 plain ops). For m = 5 the Beta(2, 2) proposal e is drawn by its inverse CDF (below); otherwise the
    Beta((m-1)/2, (m-1)/2) proposal e is drawn as
    2e - 1 = z / sqrt(chi2 + z^2) with z ~ N(0, 1) and chi2 ~ chi^2_(m-1) (a symmetric Beta mapped
    to [-1, 1]); chi2 = 2G with G ~ Gamma((m-1)/2) from the Marsaglia-Tsang proposal (one normal),
    whose own accept test is folded into Wood's: a proposal is accepted when
    log U < log(gamma ratio) + log(Wood ratio), which happens with the product of the two
    probabilities, exactly as two separate tests would. A Marsaglia-Tsang draw outside its
    domain gives NaN, and NaN compares false: rejected.
    """
    consts = _constants(m, b.dtype, b.device)
    if m == 5:
        # Beta(2, 2) by its inverse CDF 3e^2 - 2e^3 = u: with e = 1/2 + y this is sin(3 theta) = 2u - 1 for
        # y = sin(theta) (the triple-angle formula), so t = 2e - 1 = 2 sin(asin(2u - 1) / 3). One uniform per
        # proposal and no Gamma rejection, where the general path below draws two normals and rejects some.
        # (2u - 1 is drawn as a uniform on [-1, 1) directly: one op on the block fewer.)
        two_u_minus_one = torch.empty(block, b.shape[0], dtype=b.dtype, device=b.device).uniform_(-1.0, 1.0)
        t = torch.sin(torch.asin(two_u_minus_one) * consts.third) * consts.two
        log_ratio, accept_uniform = None, torch.rand(block, b.shape[0], dtype=b.dtype, device=b.device)
    else:
        normals = torch.randn(2, block, b.shape[0], dtype=b.dtype, device=b.device)
        gauss, z = normals[0], normals[1]
        g2 = gauss * gauss
        if m == 2:
            chi2, log_ratio = g2, None  # chi^2_1 is a squared normal: no rejection needed
        else:
            one_plus_y = torch.addcmul(consts.one, gauss, consts.gamma_c)  # 1 + y, y = c g
            chi2 = one_plus_y.pow(3) * consts.gamma_two_d  # 2 d (1 + y)^3
            # log of Marsaglia-Tsang's ratio, g^2/2 + d (1 - v + log v) with v = (1 + y)^3 = chi2/(2d):
            # (g^2 - chi2)/2 + d + 3 d log(1 + y) (<= 0; log of the rounded 1 + y, which chi2 uses too).
            log_ratio = torch.add(
                torch.addcmul(consts.gamma_d_t, g2 - chi2, consts.half), torch.log(one_plus_y), alpha=3.0 * consts.gamma_d
            )
        t = z * torch.rsqrt(torch.addcmul(chi2, z, z))  # 2e - 1
        accept_uniform = torch.rand_like(t)
    # Wood's ratio: with D = 1 - (1-b) e = ((1+b) - (1-b) t)/2 and delta = (1-b) t / (2D), the log
    # of the acceptance ratio n (log t_w - t_w) + d_w (t_w = 2ab/D) equals n (log1p(delta) - delta).
    half_one_minus_b = torch.addcmul(consts.half, b, consts.minus_half)
    denom = torch.addcmul(consts.one - half_one_minus_b, half_one_minus_b, t, value=-1.0)
    delta = half_one_minus_b * t / denom
    wood = torch.log1p(delta) - delta
    log_ratio = wood * consts.n if log_ratio is None else torch.add(log_ratio, wood, alpha=float(m - 1))
    # (a comparison written into a float tensor costs less than one into bool, and float max below is cheaper)
    accepted = torch.lt(accept_uniform.log(), log_ratio, out=torch.empty_like(t))
    return t, accepted


def _first_accepted(t: torch.Tensor, accepted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, one accepted proposal and whether the row has one (1.0 / 0.0). (Any rule that looks
    only at *which* proposals were accepted gives an exact draw, as the proposals are i.i.d.)"""
    found, index = torch.max(accepted, dim=0, keepdim=True)
    return t.gather(0, index)[0], found[0]


def _block_size(expected_left: float, rows: int, acceptance: float) -> int:
    """Proposals per row so that rows * (1 - acceptance)^block <= expected_left."""
    if rows * (1.0 - acceptance) <= expected_left:
        return 1
    return max(1, math.ceil(math.log(expected_left / rows) / math.log(1.0 - acceptance)))


#: Devices with ``torch._assert_async`` (a device-side check, no host sync). "meta" lets the CPU test
#: suite run the accelerator path on tensors without data, where any host read would raise.
_ASYNC_ASSERT_DEVICES = frozenset({"cuda", "meta"})


def _accepted_beta(
    kappa: torch.Tensor, m: int, sync_free: bool | None = None, b: torch.Tensor | None = None
) -> torch.Tensor:
    """t = 2e - 1 for an accepted Beta draw e of Wood's sampler, per element of the 1-d ``kappa``
    (``b``: Wood's b for it, if already computed).

    CPU (host syncs are free): one block sized from the batch's acceptance rate so that about
    ``_CPU_LEFTOVER_ROWS`` rows are expected to be left, then blocks for the rows left (each expected to
    leave ``_CPU_RETRY_LEFTOVER_ROWS``), until none is: the exact rejection sampler, vectorised.

    Accelerators (``sync_free``): reading back "is any row left?" would stall the device, so one
    pass draws enough proposals (by the worst-case acceptance rate over kappa, >= 0.62) that the
    probability that any row is left is below 1e-12 per call, in memory-bounded chunks; then
    ``torch._assert_async`` checks, without a sync, that every row was accepted. If that ever
    failed, the device would raise an error: a sample from a rejected proposal is never returned.
    Rows whose kappa is not finite (validation off) count as accepted and give NaN, not a hang.
    """
    rows = kappa.shape[0]
    if sync_free is None:
        # in a compiled graph a host read would break the graph: the fixed number of proposals, on every device
        sync_free = kappa.device.type != "cpu" or torch.compiler.is_compiling()
    if rows == 0:
        return torch.empty_like(kappa)
    b = _wood_b(kappa, m) if b is None else b
    if sync_free:
        acceptance = _acceptance_lower_bound(m, math.inf)
        total = _block_size(_ACCELERATOR_FAILURE_PROBABILITY, rows, acceptance)
        chunk = max(1, min(total, _ACCELERATOR_MAX_BLOCK_ELEMENTS // rows))
        t = torch.full_like(kappa, math.nan)
        done = ~torch.isfinite(kappa)
        for _ in range(math.ceil(total / chunk)):
            found_t, found = _first_accepted(*_propose(b, m, chunk))
            found = found.bool()
            t = torch.where(found & ~done, found_t, t)
            done = done | found
        if kappa.device.type in _ASYNC_ASSERT_DEVICES or torch.compiler.is_compiling():
            torch._assert_async(done.all(), "von Mises-Fisher sampler: a row was never accepted")
        elif not bool(done.all()):
            raise RuntimeError("von Mises-Fisher sampler: a row was never accepted")
        return t
    kappa_max = float(kappa.max())
    acceptance = _acceptance_lower_bound(m, kappa_max if math.isfinite(kappa_max) else math.inf)
    t, found = _first_accepted(*_propose(b, m, _block_size(_CPU_LEFTOVER_ROWS, rows, acceptance)))
    if bool(found.min()):  # (every row accepted; min, unlike all, needs no cast to bool)
        return t
    # (a row with a non-finite kappa is never accepted: it keeps a proposal, and its sample is NaN)
    left = ((found == 0) & torch.isfinite(kappa)).nonzero().squeeze(-1)
    for _ in range(_MAX_ROUNDS):
        if left.shape[0] == 0:
            return t
        block = _block_size(_CPU_RETRY_LEFTOVER_ROWS, left.shape[0], acceptance)
        found_t, found = _first_accepted(*_propose(b[left], m, block))
        t[left] = found_t  # (the rows still unaccepted are drawn again in the next round)
        left = left[found == 0]
    raise RuntimeError("von Mises-Fisher sampler: rows still unaccepted after many rounds")


class _Radial(NamedTuple):
    """w = loc.x as 1 - w (exact near w = 1), the radius sqrt(1 - w^2) of the tangent part, and (for a gradient)
    c with d(1-w)/dkappa = -radial c and so d radial/dkappa = -w c (radial^2 = 1 - w^2), the noise held fixed."""

    one_minus_w: torch.Tensor
    radial: torch.Tensor
    derivative: torch.Tensor | None


def _wood_radial(kappa: torch.Tensor, t: torch.Tensor, m: int, with_derivative: bool, root_and_b=None) -> _Radial:
    """From an accepted t = 2e - 1, the sample's w = (1 - (1+b) e) / (1 - (1-b) e) (no autograd).

    With P = (1 - t) + b (1 + t) (twice 1 - (1-b) e; both terms >= 0): 1 - w = 2 b (1+t) / P and 1 - w^2 =
    4 b (1 - t^2) / P^2, no cancellation near w = 1 (large kappa). With e fixed, d(1-w)/db = 2 (1 - t^2) / P^2
    and db/dkappa = -2b / sqrt(4 kappa^2 + n^2), so d(1-w)/dkappa = -(1 - w^2) / root: c = radial / root.
    """
    consts = _constants(m, t.dtype, t.device)
    root, b = _wood_root_and_b(kappa, consts) if root_and_b is None else root_and_b
    one_minus_t = consts.one - t
    b_one_plus_t = torch.addcmul(b, b, t)
    two_over_p = consts.two / (one_minus_t + b_one_plus_t)
    one_minus_w = b_one_plus_t * two_over_p
    radial = torch.sqrt(b_one_plus_t * one_minus_t) * two_over_p
    if not with_derivative:
        return _Radial(one_minus_w, radial, None)
    return _Radial(one_minus_w, radial, radial / root)


def _exact_m3(kappa: torch.Tensor, with_derivative: bool) -> _Radial:
    """Inverse-CDF sample for m = 3: w = 1 + log(1 - V (1 - e^(-2 kappa))) / kappa, V ~ U(0, 1).

    With f = log1p(V expm1(-2 kappa)): 1 - w = -f / kappa and d(1-w)/dkappa = -(1-w + f') / kappa,
    f' = -2 V e^(-2 kappa) / (1 + V expm1(-2 kappa)); c = (1-w + f') / (kappa radial) (see :class:`_Radial`;
    radial >= sqrt(tiny) keeps it finite, and where that clamp is active d(1-w)/dkappa = 0).
    """
    # kappa = 0 (an underflowed softplus, say) is the uniform limit w = 1 - 2V, not 0/0.
    consts = _constants(3, kappa.dtype, kappa.device)
    kappa = kappa.clamp_min(consts.tiny)
    uniform = torch.rand_like(kappa)
    expm1 = torch.expm1(kappa * consts.minus_two)
    inner = uniform * expm1
    one_minus_w = -torch.log1p(inner) / kappa
    radial = torch.sqrt((one_minus_w * (consts.two - one_minus_w)).clamp_min(consts.tiny))
    if not with_derivative:
        return _Radial(one_minus_w, radial, None)
    df = consts.minus_two * uniform * (expm1 + consts.one) / (inner + consts.one)
    return _Radial(one_minus_w, radial, (one_minus_w + df) / (kappa * radial))


def _tangent_parts(g, one_minus_w, radial, derivative, kappa, loc):
    """z = w loc + radial e with e = g_perp / |g_perp|, g_perp = g - (g.loc) loc, for Gaussian noise ``g``.

    e is uniform on the unit sphere of the tangent space at loc (the tangent part of an isotropic
    normal, normalised), which is all the sampler needs: no Householder reflection of e1 onto loc
    (same law, about half the operations forward and backward, no special case at loc = e1).
    Returns (w, g.loc, g_perp, 1/|g_perp|, radial/|g_perp|, z) for the backward pass.
    """
    g_mu = rowdot(g, loc)
    g_perp = torch.addcmul(g, g_mu.unsqueeze(-1), loc, value=-1.0)
    inv_len = rowdot(g_perp, g_perp).rsqrt()
    r = radial * inv_len
    w = _constants(loc.shape[-1], loc.dtype, loc.device).one - one_minus_w  # (a cached 0-dim one: no float conversion)
    return w, g_mu, g_perp, inv_len, r, torch.addcmul(w.unsqueeze(-1) * loc, r.unsqueeze(-1), g_perp)


def _tangent_vjp(grad, g, one_minus_w, radial, derivative, kappa, loc, w, g_mu, g_perp, inv_len, r, z):
    """Gradients of (kappa, loc) for the incoming gradient ``grad``. With w = 1 - (1 - w), z = w loc + r g_perp:
    dL/dkappa = -(grad.loc) d(1-w)/dkappa + (grad.g_perp) / |g_perp| dradial/dkappa
    = c ((grad.loc) radial - (grad.g_perp) / |g_perp| w) (c: ``derivative``, see :class:`_Radial`); through g_perp (r depends
    on it through 1/|g_perp|) dL/dg_perp = r grad - c g_perp, c = (grad.g_perp) r / |g_perp|^2, whose component
    along loc is r (grad.loc) (g_perp.loc = 0), so dL/dloc = (w - (g.loc) r) grad + (g.loc) c g_perp
    - r (grad.loc) g."""
    grad_w = rowdot(grad, loc)
    grad_r_len = rowdot(grad, g_perp) * inv_len
    coef = grad_r_len * r * inv_len
    grad_loc = torch.addcmul((w - g_mu * r).unsqueeze(-1) * grad, (g_mu * coef).unsqueeze(-1), g_perp)
    grad_loc = torch.addcmul(grad_loc, (r * grad_w).unsqueeze(-1), g, value=-1.0)
    grad_kappa = torch.addcmul(grad_w * radial, grad_r_len, w, value=-1.0) * derivative
    return grad_kappa.sum_to_size(kappa.shape), grad_loc.sum_to_size(loc.shape)


_TangentSample = fused_sampler_node(
    "_TangentSample",
    _tangent_parts,
    _tangent_vjp,
    n_noise=4,
    doc="(kappa, loc) -> z with the noise (and so w, radial and their kappa-derivative) given: one autograd "
    "node instead of ~20. apply(g, one_minus_w, radial, derivative, kappa, loc). Once "
    "differentiable: the kappa-derivatives come in as noise.",
    twice_differentiable=False,
)


#: m = 3 (order 1/2, where I_v is elementary): the KL's power series in kappa^2 below this kappa, the closed form
#: in exp(-2 kappa) at and above it (where no term exceeds ~7 times the KL: within 2e-15 relative).
_M3_SERIES_MAX = 1.0
#: Terms of that series: its coefficients fall like pi^(-2n) (radius pi), so 18 leave < 1e-16 relative at kappa = 1.
_M3_SERIES_TERMS = 18


def _bernoulli_even(count: int) -> list[Fraction]:
    """B_2, B_4, ..., B_(2 count), exactly (from sum_(k <= n) C(n + 1, k) B_k = 0)."""
    numbers = [Fraction(1)]
    for n in range(1, 2 * count + 1):
        numbers.append(-sum(math.comb(n + 1, k) * numbers[k] for k in range(n)) / (n + 1))
    return numbers[2::2]


def _m3_series_coefficients() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The coefficients, in powers y^0 .. y^(K-1) of y = kappa^2, of KL / y and (d KL / d kappa) / kappa.

    With kappa coth kappa = sum_n 2^(2n) B_2n kappa^(2n) / (2n)! and log(sinh kappa / kappa) = the same sum with
    each term divided by 2n, KL = kappa coth kappa - 1 - log(sinh kappa / kappa) = sum_(n >= 1) c_n kappa^(2n),
    c_n = 2^(2n) B_2n (1 - 1/(2n)) / (2n)! (c_1 = 1/6: KL ~ kappa^2 / (2m)); d KL / d kappa = sum 2n c_n kappa^(2n-1).
    """
    c = [2 ** (2 * n) * b * (1 - Fraction(1, 2 * n)) / math.factorial(2 * n)
         for n, b in enumerate(_bernoulli_even(_M3_SERIES_TERMS), start=1)]
    return tuple(float(v) for v in c), tuple(float(2 * n * v) for n, v in enumerate(c, start=1))


#: (computed at import, exactly, and rounded once: a compiled step never traces the rational arithmetic)
_M3_SERIES_COEFFICIENTS = _m3_series_coefficients()


@functools.lru_cache(maxsize=8)
def _m3_series(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:data:`_M3_SERIES_COEFFICIENTS` as a (2, K) tensor."""
    return torch.tensor(_M3_SERIES_COEFFICIENTS, dtype=dtype, device=device)


def _kl_m3_series(x: torch.Tensor, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    coef = _m3_series(x.dtype, x.device)
    y = x * x
    powers = y.unsqueeze(-1).expand(y.shape[0], _M3_SERIES_TERMS - 1).cumprod(-1)  # y, y^2, ..
    sums = torch.addmm(coef[:, :1], coef[:, 1:], powers.t())
    return y * sums[0], (x * sums[1] if with_derivative else None)


def _kl_m3_closed(x: torch.Tensor, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """With e = exp(-2 kappa) and r = 2 kappa / (1 - e): kappa coth kappa = kappa + r e / 2 and
    log(sinh kappa / kappa) = kappa - log r, so KL = log r + r e - 1 (at kappa = 1 the terms' sizes add up to ~14 times
    the KL: within 2e-15 relative); d KL / d kappa = 1/kappa - kappa / sinh^2 kappa = (1 - r^2 e) / kappa (r^2 e
    = 0.72 at kappa = 1, falling like 4 kappa^2 e^(-2 kappa)). Seven ops, three more for the derivative."""
    consts = _constants(3, x.dtype, x.device)
    minus_two_x = x * consts.minus_two
    e = torch.exp(minus_two_x)
    r = minus_two_x / (e - consts.one)  # (e - 1: no rounding worth a digit, e <= 0.14)
    kl = torch.addcmul(torch.log(r) - consts.one, r, e)
    return kl, (torch.addcmul(consts.one, r * r, e, value=-1.0) / x if with_derivative else None)


def _kl_m3(x: torch.Tensor, with_derivative: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """KL(vMF || uniform) on S^2 and its derivative, in elementary forms (no Bessel series: I_(1/2) and I_(3/2)
    are sinh and cosh), for a 1-d float64 kappa. On the CPU only the form(s) some element needs are evaluated
    (reading the mask back is free there); elsewhere, and in a compiled graph, both, on clamped arguments."""
    side = one_side(x, _M3_SERIES_MAX)
    if side == "below":
        return _kl_m3_series(x, with_derivative)
    if side == "above":
        return _kl_m3_closed(x, with_derivative)
    below = x < _M3_SERIES_MAX
    low = _kl_m3_series(x.clamp_max(_M3_SERIES_MAX), with_derivative)
    high = _kl_m3_closed(x.clamp_min(_M3_SERIES_MAX), with_derivative)
    kl = torch.where(below, low[0], high[0])
    return kl, (torch.where(below, low[1], high[1]) if with_derivative else None)


class _KLToUniform(torch.autograd.Function):
    """kappa -> KL(vMF(., kappa) || uniform on S^(m-1)) = kappa A - L, with v = m/2 - 1.

    One autograd node instead of a dozen: d KL / d kappa = kappa A'(kappa), with A' from the Bessel
    module's cancellation-free forms. For small kappa the KL is ~kappa^2 / (2m) and is formed as
    kappa A - L (both small); for large kappa as -kappa (1 - A) - (L - kappa) (both moderate), so
    no form ever subtracts two numbers near kappa. The switch is kappa = v + 1 where the Bessel
    module uses Debye's expansion, and its own series/Hankel switch (kappa ~ 10-20) below that.
    m = 3 (v = 1/2) uses the elementary forms of :func:`_kl_m3` instead.
    """

    @staticmethod
    def forward(ctx, kappa: torch.Tensor, v: float) -> torch.Tensor:
        with_derivative = ctx.needs_input_grad[0]

        def kl_forms(x: torch.Tensor, terms: list[torch.Tensor], method: str) -> list[torch.Tensor]:
            log_f, log_f_scaled, ratio, complement = terms[:4]
            if method == "series":  # x < X <= ~20 with v < 12: the small-kappa form is accurate
                kl = x * ratio - log_f
            elif method == "hankel":  # x >= X >= ~10
                kl = -torch.addcmul(log_f_scaled, x, complement)
            else:
                kl = torch.where(x < v + 1.0, x * ratio - log_f, -torch.addcmul(log_f_scaled, x, complement))
            return [kl, *terms[4:]]

        # in float64 (where the device has it), converted here rather than around the node: two autograd
        # nodes (the casts) fewer per step; the derivative is rounded once to the caller's dtype
        x = in_float64(kappa)
        if v == 0.5:  # m = 3: elementary forms
            kl, d_kl = _kl_m3(x.reshape(-1), with_derivative)
            kl, d_kl = kl.reshape(x.shape), (d_kl.reshape(x.shape) if with_derivative else None)
        else:
            out = evaluate_forms(v, x, with_derivative, kl_forms)
            kl, d_kl = out[0], (x * out[1] if with_derivative else None)  # d KL / d kappa = kappa A'(kappa)
        if with_derivative:
            ctx.save_for_backward(d_kl.to(kappa.dtype))
        return kl.to(kappa.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (d_kl,) = ctx.saved_tensors
        return grad * d_kl, None


def von_mises_fisher_kl_to_uniform(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """KL(vMF(., kappa) || uniform on S^(m-1)) for concentrations ``kappa`` (any shape), in nats, with the
    Bessel-ratio gradient; the same function of kappa as its siblings' ``*_kl_to_uniform``."""
    x, dtype = prepare_argument(kappa)
    # in float64 (where the device has it, inside the node): the Bessel forms in float32 leave the KL and its
    # derivative up to 1.8e-5 off (m = 3, kappa = 10); rounded once to the caller's dtype they are within its
    # own rounding
    return _KLToUniform.apply(x, 0.5 * m - 1.0).to(dtype)


class VonMisesFisher(SphericalDistribution):
    r"""von Mises-Fisher distribution on the unit sphere S^(m-1) in R^m.

    Dimension convention: ``loc`` has shape ``batch_shape + (m,)``, m >= 2 the *ambient*
    dimension (a latent of intrinsic dimension d uses m = d + 1); ``event_shape == (m,)``.
    ``scale`` is the concentration kappa > 0, of a shape broadcastable with ``loc.shape[:-1]``; a
    trailing singleton axis (``scale.shape == loc.shape[:-1] + (1,)``, as in the S-VAE authors'
    code) is squeezed, so a (B, 1) scale with a (B, m) loc gives ``batch_shape == (B,)``.

    Sampling: w = loc.x by Wood's (1994) rejection sampler (with the cancellation-free
    b = (m-1) / (2 kappa + sqrt(4 kappa^2 + (m-1)^2))), or for m = 3 by the exact inverse CDF;
    then x = w loc + sqrt(1 - w^2) e with e uniform on the unit sphere of the tangent space at ``loc`` (the
    normalised tangent part of a standard normal vector; m = 2, the circle, works the same way), one fused
    autograd node. Everything runs on the
    tensors' device and in their dtype, without numpy. Wood's proposals are drawn in vectorised
    blocks whose size comes from a lower bound on the acceptance rate (>= 0.62 for every m and
    kappa, ~0.99 for kappa << m):

    * CPU, where reading a flag back costs nothing: the block leaves a row unaccepted in under one call
      in five; those rows get further blocks until none is left. Exact, and it cannot hang
      (non-finite kappa, possible with validation off, gives NaN samples).
    * Accelerators, where ``if (~accepted).any()`` would stall the device every call: a single
      pass of ~30-40 proposals per row makes an unaccepted row a < 1e-12 event per call, and
      ``torch._assert_async`` checks, without a host sync, that every row was accepted -- in
      the (never expected) failure the device raises instead of returning a sample from a
      rejected proposal. The extra proposals cost little on a GPU; the stall would cost more.

    Gradients: :meth:`rsample` reparameterises through the *accepted* proposal (the Beta draw is
    held fixed, w = h(e, kappa)), which is what the S-VAE authors' code does. Because whether a
    proposal is accepted depends on kappa, that alone is biased in kappa (at m = 5, kappa = 2 the
    gradient of E[loc.x] comes out 0.128 instead of dA/dkappa = 0.147); it is the default because
    it needs no extra term in the loss, has low variance, and the bias vanishes as kappa grows
    (where Wood's acceptance no longer depends much on kappa) and in loc (exact). For the
    unbiased gradient (Naesseth et al. 2017; S-VAE Lemma 2) use :meth:`rsample_with_correction`,
    which also returns a zero-valued ``correction`` whose gradient is
    grad log(q(h(e, kappa)) / r(h(e, kappa))): ``f(z) + f(z).detach() * correction`` then has an
    unbiased gradient of E[f(z)]. For m = 3 the inverse-CDF sampler has no rejection, so
    :meth:`rsample` is already exact and the correction is zero.

    Properties beyond torch's: ``concentration`` (kappa, torch's ``scale``), ``mean_resultant_length``
    (A_m(kappa) = E[loc.x]; ``mean`` is A_m(kappa) loc), ``log_normalizer()``, ``m``. The KL to :class:`HypersphericalUniform` is
    registered with ``torch.distributions.kl_divergence``. The rsample + KL backward pass goes
    through two autograd nodes (sample assembly, KL) with hand-written, cancellation-free
    derivatives, which keeps this several-hundred-op computation cheap on CPU.

    Args:
        loc: mean direction, unit vectors along the last axis.
        scale: concentration kappa > 0.
        validate_args: check that ``loc`` is unit-norm (within 1e-4) and kappa > 0, and that
            ``log_prob``'s argument lies on the sphere; ``None`` follows torch's default.
            Structural errors (m < 2, shapes that do not broadcast) always raise.
    """

    arg_constraints = {"loc": unit_vector, "scale": constraints.positive}
    scale_name = "kappa"
    scale_requirement = "> 0"
    concentration = property(lambda self: self.scale, doc="The concentration kappa (torch's ``scale``).")
    #: Tests switch this off to check Wood's sampler against the exact one at m = 3.
    _exact_for_m3 = True
    _expand_copies = ("_exact_for_m3",)

    # ---- Bessel-function quantities ---------------------------------------------------------

    @property
    def _order(self) -> float:
        return 0.5 * self.m - 1.0

    def _bessel(self):
        return bessel_iv_terms(self._order, self.scale)

    @property
    def mean_resultant_length(self) -> torch.Tensor:
        """A_m(kappa) = E[loc.x] = I_(m/2)(kappa) / I_(m/2-1)(kappa), shape ``batch_shape``."""
        return self._bessel().ratio

    def mean_resultant_complement(self) -> torch.Tensor:
        return self._bessel().ratio_complement

    def log_normalizer(self) -> torch.Tensor:
        """log C_m(kappa) = (m/2 - 1) log kappa - (m/2) log(2 pi) - log I_(m/2-1)(kappa)."""
        return -self._bessel().log_hyp0f1 - log_sphere_surface(self.m)

    def kl_to_uniform(self) -> torch.Tensor:
        return von_mises_fisher_kl_to_uniform(self.scale, self.m)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cosine = (value * self.loc).sum(-1)
        return self.scale * (cosine - 1.0) - self._bessel().log_hyp0f1_scaled - log_sphere_surface(self.m)

    # ---- sampling ---------------------------------------------------------------------------

    def _draw(self, sample_shape: torch.Size, with_correction: bool):
        shape = self._extended_shape(sample_shape)[:-1]
        m = self.m
        with_grad = torch.is_grad_enabled() and (self.scale.requires_grad or self.loc.requires_grad)
        kappa = self.scale.detach().expand(shape)
        exact = m == 3 and self._exact_for_m3
        if exact:
            radial = _exact_m3(kappa, with_grad)
        else:
            root_and_b = _wood_root_and_b(kappa, _constants(m, kappa.dtype, kappa.device))
            if kappa.dim() == 1:  # (the common case: no reshapes)
                t = _accepted_beta(kappa, m, b=root_and_b[1])
            else:
                t = _accepted_beta(kappa.reshape(-1), m, b=root_and_b[1].reshape(-1)).reshape(shape)
            radial = _wood_radial(kappa, t, m, with_grad, root_and_b)
        g = torch.randn(shape + (m,), dtype=kappa.dtype, device=kappa.device)
        z = _TangentSample.sample(g, *radial, self.scale, self.loc)
        if not with_correction:
            return z, None
        if exact:
            # No rejection: the reparameterisation gradient is already exact.
            return z, torch.zeros(shape, dtype=kappa.dtype, device=kappa.device)
        # log q(w) + log|dw/de| with e held fixed, up to terms constant in kappa:
        # -(L - kappa) - kappa (1 - w) + ((m-1)/2) log b - (m-1) log D, D = (1 - e) + b e.
        kappa = self.scale.expand(shape)
        b = _wood_b(kappa, m)
        e = 0.5 + 0.5 * t
        one_minus_w = 2.0 * b * e / (1.0 - e + b * e)
        log_ratio = (
            -bessel_iv_terms(self._order, kappa).log_hyp0f1_scaled
            - kappa * one_minus_w
            + 0.5 * (m - 1) * torch.log(b)
            - (m - 1) * torch.log(1.0 - e + b * e)
        )
        return z, log_ratio - log_ratio.detach()

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        """Samples of shape ``sample_shape + batch_shape + (m,)``, reparameterised through the
        accepted proposal (see the class docstring for the kappa-gradient's bias)."""
        return self._draw(torch.Size(sample_shape), with_correction=False)[0]

    def rsample_with_correction(
        self, sample_shape: torch.Size | tuple = torch.Size()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, correction): ``correction`` (shape ``sample_shape + batch_shape``) is zero-valued,
        with gradient grad_kappa log(q(h(e, kappa)) / r(h(e, kappa))) for the accepted e, so that
        ``f(z) + f(z).detach() * correction`` has an unbiased gradient of E[f(z)]."""
        return self._draw(torch.Size(sample_shape), with_correction=True)
