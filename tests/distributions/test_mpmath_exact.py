"""Every family's scalar quantities against mpmath at 40 digits (issue 26: exact in float64).

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m).

For each family (spherical Cauchy, Power Spherical, von Mises-Fisher) and each quantity -- log_prob at
x = mu, x orthogonal to mu and x = -mu (exact unit vectors, so the reference needs no rounding model), the KL
to the uniform, the entropy, the mean resultant length A = E[mu.x] and d KL / d scale (autograd through the
library's KL) -- the float64 value is within RTOL = 1e-13 relative of an mpmath reference computed at 40
significant digits at the same (exactly converted) float parameter. log_prob and the entropy are sums with
-log|S^(m-1)|; their tolerance is relative to the larger of |value| and |log|S^(m-1)||. In float32 the
inputs are float32 numbers and the results are within F32_RTOL = 4 * 2^-24 relative of the mpmath value at
that float32 input (a few float32 ulps: the float64 evaluation rounded once, plus the input's own conditioning
where it is large). The default tier uses a coarse grid; the dense grid (every m up to 40, then spaced up to
1025, scales log-spaced) is marked slow.

References (independent of the library's formulas):
* spherical Cauchy: KL / (m - 1) = E_s log(1 + rho^2 + 2 rho s) - log(1 - rho^2) and
  E[mu.x] = rho (1 + (1 - rho^2) / rho E_s[(rho + s) / (1 + rho^2 + 2 rho s)]), s = mu.u with density
  proportional to (1 - s^2)^((m-3)/2), by tanh-sinh quadrature (checked against the 3F2 / 2F1 form of the
  series in ``test_spherical_cauchy_oracles_agree``);
* Power Spherical: lgamma / digamma / trigamma at 40 digits (the cancellation at small kappa costs at most
  ~15 of them);
* von Mises-Fisher: log 0F1(; m/2; kappa^2 / 4) by mpmath.hyp0f1, A = I_(m/2)(kappa) / I_(m/2-1)(kappa) by
  mpmath.besseli, d KL / d kappa = kappa A'(kappa) with A' = 1 - A^2 - (m - 1) A / kappa.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import mpmath as mp
import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher

RTOL = 1e-13
F32_RTOL = 4 * 2.0**-24
DPS = 40


def _log_surface(m: int) -> mp.mpf:
    return mp.log(2) + (mp.mpf(m) / 2) * mp.log(mp.pi) - mp.loggamma(mp.mpf(m) / 2)


# ----------------------------------------------------------------------------------------------
# mpmath references: each returns a dict of quantities at (m, scale), scale an exact float.
# ----------------------------------------------------------------------------------------------


def _quad_points(m: int) -> list:
    width = 1 / mp.sqrt(m)
    points = {mp.mpf(-1), mp.mpf(0), mp.mpf(1)}
    points.update(s * j * width for j in (1, 2, 4, 8, 16) if j * width < 1 for s in (-1, 1))
    points.update(mp.mpf(-1) + mp.mpf(10) ** -e for e in (2, 4, 8, 12))  # the near-singular end as rho -> 1
    return sorted(points)


@functools.lru_cache(maxsize=None)
def spherical_cauchy_reference(m: int, rho: float) -> dict[str, mp.mpf]:
    with mp.workdps(DPS):
        r = mp.mpf(rho)
        x = r * r
        if m == 2:
            g, h = -mp.log1p(-x), mp.mpf(1)
        else:
            a = mp.mpf(m - 3) / 2
            z = mp.beta(mp.mpf(1) / 2, a + 1)
            pts = _quad_points(m)
            f = mp.quad(lambda s: (1 - s * s) ** a * mp.log1p(x + 2 * r * s), pts) / z
            e = mp.quad(lambda s: (1 - s * s) ** a * (r + s) / (1 + x + 2 * r * s), pts) / z
            g, h = f - mp.log1p(-x), 1 + (1 - x) / r * e
        kl = (m - 1) * g
        log_s = _log_surface(m)
        log_ratio = {t: mp.log((1 - x) / (1 + x - 2 * r * t)) for t in (1, 0, -1)}
        return {
            "kl": kl,
            "dkl": 2 * (m - 1) * r * h / (1 - x),
            "mean": r * h,
            "entropy": log_s - kl,
            **{f"log_prob{t}": (m - 1) * lr - log_s for t, lr in log_ratio.items()},
        }


def spherical_cauchy_series_reference(m: int, rho: float) -> tuple[mp.mpf, mp.mpf]:
    """(KL / (m - 1), E[mu.x] / rho) from the 3F2 / 2F1 form of the series: a check of the quadrature."""
    with mp.workdps(DPS):
        x, half = mp.mpf(rho) ** 2, mp.mpf(m) / 2
        s = (1 - half) / half * x * mp.hyp3f2(2 - half, 1, 1, 1 + half, 2, x)
        return -mp.log1p(-x) - s, 1 - (1 - x) * (mp.hyp2f1(1 - half, 1, half, x) - 1) / x


@functools.lru_cache(maxsize=None)
def power_spherical_reference(m: int, kappa: float) -> dict[str, mp.mpf]:
    with mp.workdps(DPS):
        k, beta = mp.mpf(kappa), mp.mpf(m - 1) / 2
        alpha = beta + k
        log_norm = -((alpha + beta) * mp.log(2) + mp.loggamma(alpha) - mp.loggamma(alpha + beta) + beta * mp.log(mp.pi))
        log_s = _log_surface(m)
        kl = log_norm + log_s + k * (mp.digamma(alpha) - mp.digamma(alpha + beta)) + k * mp.log(2)
        return {
            "kl": kl,
            "dkl": k * (mp.psi(1, alpha) - mp.psi(1, alpha + beta)),
            "mean": k / (k + m - 1),
            "entropy": log_s - kl,
            "log_prob1": log_norm + k * mp.log(2),
            "log_prob0": log_norm,
        }


@functools.lru_cache(maxsize=None)
def von_mises_fisher_reference(m: int, kappa: float) -> dict[str, mp.mpf]:
    with mp.workdps(DPS):
        k, nu = mp.mpf(kappa), mp.mpf(m) / 2 - 1
        log_hyp = mp.log(mp.hyp0f1(nu + 1, k * k / 4))
        a = mp.besseli(nu + 1, k) / mp.besseli(nu, k)
        log_s = _log_surface(m)
        kl = k * a - log_hyp
        return {
            "kl": kl,
            "dkl": k * (1 - a * a - (m - 1) * a / k),
            "mean": a,
            "entropy": log_s - kl,
            "log_normalizer": -log_hyp - log_s,
            "log_prob1": k - log_hyp - log_s,
            "log_prob0": -log_hyp - log_s,
            "log_prob-1": -k - log_hyp - log_s,
        }


# ----------------------------------------------------------------------------------------------
# The families and how to read each quantity off the library.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    make: Callable[[torch.Tensor, torch.Tensor], torch.distributions.Distribution]
    reference: Callable[[int, float], dict[str, mp.mpf]]
    coarse_scales: tuple[float, ...]
    dense_scales: tuple[float, ...]
    extra: Callable[[torch.distributions.Distribution], dict[str, torch.Tensor]] = lambda d: {}


def _log_spaced(lo: float, hi: float, n: int) -> tuple[float, ...]:
    return tuple(float(v) for v in torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi)), n, dtype=torch.float64))


FAMILIES = [
    Family(
        "spherical_cauchy",
        SphericalCauchy,
        spherical_cauchy_reference,
        (1e-6, 1e-3, 0.1, 0.2, 0.3, 0.5, 0.9, 0.974, 0.99, 1 - 1e-6, 1 - 1e-12),
        _log_spaced(1e-6, 0.5, 12) + tuple(1 - v for v in _log_spaced(1e-12, 0.5, 14)),
    ),
    Family(
        "power_spherical",
        PowerSpherical,
        power_spherical_reference,
        (1e-6, 1e-3, 0.1, 1.0, 10.0, 1e3, 1e6),
        _log_spaced(1e-6, 1e6, 25),
    ),
    Family(
        "von_mises_fisher",
        VonMisesFisher,
        von_mises_fisher_reference,
        (1e-6, 1e-3, 0.1, 1.0, 10.0, 1e3, 1e5),
        _log_spaced(1e-6, 1e5, 23),
        lambda d: {"log_normalizer": d.log_normalizer()},
    ),
]
COARSE_DIMS = (2, 3, 4, 5, 7, 9, 11, 16, 65, 1025)
DENSE_DIMS = tuple(range(2, 41)) + (47, 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1024, 1025)

#: the quantities whose tolerance is relative to |log|S^(m-1)|| as well (sums with the log surface)
WITH_LOG_SURFACE = ("entropy", "log_prob", "log_normalizer")


def library_values(family: Family, m: int, scales: list[float], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    scale = torch.tensor(scales, dtype=dtype, requires_grad=True)
    loc = torch.zeros(len(scales), m, dtype=dtype)
    loc[:, 0] = 1.0
    dist = family.make(loc, scale)
    kl = kl_divergence(dist, HypersphericalUniform(m, (len(scales),), dtype=dtype))
    (dkl,) = torch.autograd.grad(kl.sum(), scale)
    points = {1: loc, -1: -loc}
    if m >= 2:
        points[0] = torch.zeros_like(loc)
        points[0][:, 1] = 1.0
    out = {"kl": kl, "dkl": dkl, "mean": dist.mean_resultant_length, "entropy": dist.entropy(), **family.extra(dist)}
    for t, x in points.items():
        out[f"log_prob{t}"] = dist.log_prob(x)
    return {k: v.detach() for k, v in out.items()}


def check_family(family: Family, m: int, scales: tuple[float, ...], dtype: torch.dtype, rtol: float) -> None:
    if dtype == torch.float32:
        scales = tuple(float(torch.tensor(s, dtype=torch.float32)) for s in scales)
        scales = tuple(s for s in scales if family.name != "spherical_cauchy" or s < 1.0)
    got = library_values(family, m, list(scales), dtype)
    failures = []
    with mp.workdps(DPS):
        log_s = abs(_log_surface(m))
        for i, s in enumerate(scales):
            reference = family.reference(m, s)
            for quantity, ref in reference.items():
                if quantity not in got:
                    continue
                value = got[quantity][i].item()
                scale = max(abs(ref), log_s) if quantity.startswith(WITH_LOG_SURFACE) else abs(ref)
                if ref == 0 or not mp.isfinite(ref):
                    ok = value == float(ref)
                    err = mp.inf if not ok else 0
                else:
                    err = abs(mp.mpf(value) - ref) / scale
                    ok = err <= rtol
                if not ok:
                    failures.append(f"{quantity} at scale {s!r}: {value!r} vs {mp.nstr(ref, 20)} (rel err {mp.nstr(err, 3)})")
    assert not failures, f"{family.name}, m = {m}, {dtype}:\n" + "\n".join(failures)


@pytest.mark.parametrize("m", COARSE_DIMS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_float64_within_1e13_of_mpmath(family, m):
    check_family(family, m, family.coarse_scales, torch.float64, RTOL)


@pytest.mark.parametrize("m", (3, 5, 11, 65))
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_float32_within_a_few_ulps_of_mpmath(family, m):
    check_family(family, m, family.coarse_scales, torch.float32, F32_RTOL)


@pytest.mark.slow  # two mpmath oracles against each other: ~35 s an m
@pytest.mark.parametrize("m", (3, 5, 6, 9, 11, 64, 1025))
def test_spherical_cauchy_oracles_agree(m):
    # the quadrature reference against the closed (hypergeometric) form of the series: 1e-25 relative
    for rho in (1e-6, 0.3, 0.9, 0.999):
        ref = spherical_cauchy_reference(m, rho)
        g, h = spherical_cauchy_series_reference(m, rho)
        with mp.workdps(DPS):
            assert abs(ref["kl"] / (m - 1) - g) <= mp.mpf(10) ** -25 * g
            assert abs(ref["mean"] / mp.mpf(rho) - h) <= mp.mpf(10) ** -25 * h


@pytest.mark.parametrize("m", (3, 5, 8, 11, 65))
def test_spherical_cauchy_pair_kl_within_1e13_of_mpmath(m):
    # KL(SC(e1, rho1) || SC(e1, rho2)) = KL(SC(rho*) || U) with rho* = |rho1 - rho2| / sqrt((rho1 - rho2)^2 +
    # (1 - rho1^2)(1 - rho2^2)) (Moebius invariance), the reference computed from the exact float inputs.
    pairs = [(0.3, 0.2), (0.9, 0.1), (0.5, 0.99), (1e-4, 2e-4), (0.999, 0.99)]
    loc = torch.zeros(len(pairs), m, dtype=torch.float64)
    loc[:, 0] = 1.0
    q = SphericalCauchy(loc, torch.tensor([p[0] for p in pairs], dtype=torch.float64))
    p = SphericalCauchy(loc, torch.tensor([p[1] for p in pairs], dtype=torch.float64))
    kl = kl_divergence(q, p)
    with mp.workdps(DPS):
        for (r1, r2), value in zip(pairs, kl.tolist()):
            a, b = mp.mpf(r1), mp.mpf(r2)
            rho = abs(a - b) / mp.sqrt((a - b) ** 2 + (1 - a * a) * (1 - b * b))
            ref = spherical_cauchy_reference.__wrapped__(m, rho)["kl"]
            assert abs(value - ref) <= RTOL * ref, (m, r1, r2, value, ref)


@pytest.mark.slow
@pytest.mark.parametrize("m", DENSE_DIMS)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_float64_dense_grid(family, m):
    check_family(family, m, family.dense_scales, torch.float64, RTOL)
