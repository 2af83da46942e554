"""Tests of the spherical Cauchy distribution (hsvae.distributions.spherical_cauchy).

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m).
Independent oracles: mpmath quadrature over the angle theta between x and mu of the density as
defined by Kato and McCullagh (2020), f_t(t) proportional to
(1 - t^2)^((m-3)/2) ((1 - rho^2) / (1 + rho^2 - 2 rho t))^(m-1), t = cos(theta); scipy for the
Kolmogorov-Smirnov test. Statistical checks use 5 standard errors estimated from the sample.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

from hsvae.distributions import SphericalCauchy
from hsvae.distributions._sphere import log_sphere_surface
from hsvae.distributions.spherical_cauchy import (
    _mobius_parts,
    _MobiusSample,
    spherical_cauchy_kl_to_uniform,
    spherical_cauchy_mean_resultant,
)
from tests.distribution_checks import (
    ORACLE_DIMS,
    STAT_DIMS,
    assert_finite_everywhere,
    assert_fused_node_matches_autograd,
    unit_vector,
)

ORACLE_RHOS = [0.0, 1e-6, 0.1, 0.5, 0.9, 0.99, 0.999, 1 - 1e-5, 1 - 1e-7]


# ----------------------------------------------------------------------------------------------
# mpmath oracle: quadrature over theta of the defining density.
# ----------------------------------------------------------------------------------------------


def _theta_integral(m: int, rho: float, g, dps: int = 20) -> mp.mpf:
    """E[g(theta, log-density ratio)] under the spherical Cauchy, by quadrature over theta."""
    mp.mp.dps = dps
    rho = mp.mpf(rho)
    # |S^(m-2)| / |S^(m-1)|: the density of theta is proportional to sin(theta)^(m-2).
    log_c = mp.loggamma(mp.mpf(m) / 2) - mp.loggamma(mp.mpf(m - 1) / 2) - mp.log(mp.pi) / 2
    one_m_r2 = (1 - rho) * (1 + rho)

    def log_ratio(th):  # log((1 - rho^2) / (1 + rho^2 - 2 rho cos th)), without cancellation
        return mp.log(one_m_r2 / ((1 - rho) ** 2 + 4 * rho * mp.sin(th / 2) ** 2))

    def log_density(th):
        return log_c + (m - 2) * mp.log(mp.sin(th)) + (m - 1) * log_ratio(th)

    def integrand(th):
        return mp.exp(log_density(th)) * g(th, log_ratio(th))

    # Breakpoints: the mass sits at theta ~ (1 - rho) for small m and near the mode for large m.
    points = {mp.mpf(0), mp.pi}
    points.update(v for k in range(-2, 24) if (v := (1 - rho) * mp.mpf(2) ** k) < mp.pi)
    if m > 2:  # the mode of the log-density, located in float64 (only breakpoints depend on it)
        r = float(rho)
        def neg_log_density(th):
            return (m - 1) * math.log((1 - r) ** 2 + 4 * r * math.sin(th / 2) ** 2) - (m - 2) * math.log(math.sin(th))

        res = scipy.optimize.minimize_scalar(
            neg_log_density,
            bounds=(1e-300, math.pi / 2),
            method="bounded",
            options={"xatol": 1e-14},
        )
        mode, width = mp.mpf(res.x), 1 / mp.sqrt(m)
        points.update(v for j in range(-8, 9) if 0 < (v := mode + j * width * min(mode, 1) / 2) < mp.pi)
    return mp.quad(integrand, sorted(points))


@functools.lru_cache(maxsize=None)
def oracle_kl(m: int, rho: float) -> float:
    """KL(spCauchy || uniform) = (m - 1) E[log((1 - rho^2) / (1 + rho^2 - 2 rho mu.x))]."""
    if rho == 0.0:
        return 0.0
    return float(_theta_integral(m, rho, lambda th, lr: (m - 1) * lr))


@functools.lru_cache(maxsize=None)
def oracle_mean_resultant(m: int, rho: float) -> float:
    """E[mu.x] = E[cos theta]."""
    return float(_theta_integral(m, rho, lambda th, lr: mp.cos(th)))


# ----------------------------------------------------------------------------------------------
# KL and mean resultant length against the oracle.
# ----------------------------------------------------------------------------------------------


def test_oracle_reproduces_the_circle_closed_form():
    # On the circle the KL is -log(1 - rho^2) exactly: a check of the oracle itself.
    for rho in [0.1, 0.9, 0.999, 1 - 1e-7]:
        assert oracle_kl(2, rho) == pytest.approx(-math.log1p(-rho) - math.log1p(rho), rel=1e-12)


@pytest.mark.parametrize("m", ORACLE_DIMS)
def test_kl_matches_mpmath_quadrature(m):
    rho = torch.tensor(ORACLE_RHOS, dtype=torch.float64)
    kl = spherical_cauchy_kl_to_uniform(rho, m)
    for r, value in zip(ORACLE_RHOS, kl.tolist()):
        reference = oracle_kl(m, r)
        if r <= 1e-6:
            assert abs(value - reference) <= 1e-9, (m, r, value, reference)
        else:
            assert abs(value - reference) <= 1e-6 * reference, (m, r, value, reference)


@pytest.mark.parametrize("m", [3, 65, 4097])
def test_kl_float32_matches_float64(m):
    rho = torch.tensor(ORACLE_RHOS[2:], dtype=torch.float32)
    kl32 = spherical_cauchy_kl_to_uniform(rho, m)
    kl64 = spherical_cauchy_kl_to_uniform(rho.double(), m)
    assert kl32.dtype == torch.float32
    torch.testing.assert_close(kl32.double(), kl64, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("m", STAT_DIMS)
def test_mean_resultant_matches_mpmath_quadrature(m):
    rhos = [0.1, 0.5, 0.9, 0.99, 0.999]
    mean = spherical_cauchy_mean_resultant(torch.tensor(rhos, dtype=torch.float64), m)
    for r, value in zip(rhos, mean.tolist()):
        assert value == pytest.approx(oracle_mean_resultant(m, r), abs=3e-7), (m, r)


@pytest.mark.parametrize("m", [2, 3, 5, 10, 65, 1025])
@pytest.mark.parametrize("rho", [1e-3, 0.5, 0.99, 0.9999])
def test_kl_derivative_matches_finite_differences_of_the_oracle(m, rho):
    r = torch.tensor([rho], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(spherical_cauchy_kl_to_uniform(r, m).sum(), r)
    h = 1e-3 * (1 - rho) * rho
    fd = (oracle_kl(m, rho + h) - oracle_kl(m, rho - h)) / (2 * h)
    assert grad.item() == pytest.approx(fd, rel=1e-5)


def test_kl_gradcheck_and_gradgradcheck_float64():
    for m in [2, 3, 4, 5, 11, 300]:
        rho = torch.tensor([0.0, 5e-4, 0.2, 0.7, 0.97], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda r: spherical_cauchy_kl_to_uniform(r, m), (rho,))
        assert torch.autograd.gradgradcheck(lambda r: spherical_cauchy_kl_to_uniform(r, m), (rho,))


# ----------------------------------------------------------------------------------------------
# Samples.
# ----------------------------------------------------------------------------------------------


def _cos_and_tangent(x: torch.Tensor, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = (x * loc).sum(-1)
    return t, x - t.unsqueeze(-1) * loc


@pytest.mark.parametrize("m", STAT_DIMS)
@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9, 0.999])
def test_samples_are_unit_and_have_the_right_mean(m, rho):
    torch.manual_seed(1000 * m + int(1000 * rho))
    n = 20_000 if m <= 65 else 5_000
    loc = unit_vector(m, seed=m)
    x = SphericalCauchy(loc, torch.tensor(rho, dtype=torch.float64)).sample((n,))
    assert x.shape == (n, m)
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-12
    # E[x] = A(rho) mu, coordinate by coordinate, within 5 standard errors.
    expected = oracle_mean_resultant(m, rho) * loc if rho > 0 else torch.zeros(m, dtype=torch.float64)
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - expected).abs() <= 5 * se + 1e-12).all()
    t, _ = _cos_and_tangent(x, loc)
    assert abs(t.mean().item() - expected @ loc) <= 5 * t.std().item() / math.sqrt(n) + 1e-12


@pytest.mark.parametrize("m,rho", [(2, 0.5), (3, 0.95), (10, 0.5), (10, 0.999), (65, 0.9)])
def test_angle_distribution_kolmogorov_smirnov(m, rho):
    """The angle to mu follows the defining density (KS test against its numerical CDF)."""
    torch.manual_seed(7 * m)
    n = 20_000
    loc = unit_vector(m, seed=1)
    x = SphericalCauchy(loc, torch.tensor(rho, dtype=torch.float64)).sample((n,))
    theta = 2 * torch.asin(((x - loc).norm(dim=-1) / 2).clamp(max=1.0)).numpy()
    grid = np.unique(np.concatenate([np.geomspace(1e-9, np.pi, 20_000), np.linspace(0, np.pi, 20_000)]))
    # log of sin(theta)^(m-2) ((1 - rho^2) / ((1 - rho)^2 + 4 rho sin^2(theta/2)))^(m-1), stabilised
    log_f = (m - 2) * np.log(np.maximum(np.sin(grid), 1e-300)) + (m - 1) * (
        np.log1p(-rho) + np.log1p(rho) - np.log((1 - rho) ** 2 + 4 * rho * np.sin(grid / 2) ** 2)
    )
    f = np.exp(log_f - log_f.max())
    cdf = scipy.integrate.cumulative_trapezoid(f, grid, initial=0.0)
    cdf /= cdf[-1]
    result = scipy.stats.kstest(np.interp(theta, grid, cdf), "uniform")
    assert result.pvalue > 1e-3, result


@pytest.mark.parametrize("m", STAT_DIMS)
def test_log_prob_integrates_to_one_by_quadrature(m):
    """Integrate exp(log_prob) over the sphere via the angle (|S^(m-2)| sin^(m-2) dtheta)."""
    loc = unit_vector(m, seed=3)
    tangent = torch.randn(m, dtype=torch.float64)
    tangent = tangent - (tangent @ loc) * loc
    tangent = tangent / tangent.norm()
    for rho in [0.0, 0.3, 0.9, 0.999]:
        dist = SphericalCauchy(loc, torch.tensor(rho, dtype=torch.float64))

        def density(th, dist=dist):
            x = math.cos(th) * loc + math.sin(th) * tangent
            return math.exp(dist.log_prob(x).item() + log_sphere_surface(m - 1) + (m - 2) * math.log(math.sin(th)))

        points = [0.0] + [min((1 - rho) * 2.0**k, math.pi) for k in range(-2, 12)] + [math.pi]
        total = sum(scipy.integrate.quad(density, a, b, limit=200)[0] for a, b in zip(points, points[1:]) if b > a)
        assert total == pytest.approx(1.0, abs=1e-7), (m, rho)


# ----------------------------------------------------------------------------------------------
# Reparameterisation gradients.
# ----------------------------------------------------------------------------------------------


def test_fused_sampler_backward_matches_autograd():
    """The hand-written VJP equals plain autograd through the same operations; double backward too."""
    torch.manual_seed(0)
    for m in [2, 3, 7, 40]:
        loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=torch.float64), dim=-1).requires_grad_()
        rho = torch.tensor([0.0, 0.3, 0.9, 0.999], dtype=torch.float64, requires_grad=True)
        noise = torch.randn(3, 4, m, dtype=torch.float64)
        assert_fused_node_matches_autograd(_MobiusSample, _mobius_parts, (noise,), (loc, rho))


# ----------------------------------------------------------------------------------------------
# Robustness: finite values and gradients everywhere in the valid range.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", ORACLE_DIMS)
def test_finite_everywhere(m, dtype):
    assert_finite_everywhere(SphericalCauchy, m, [0.0, 1e-6, 0.5, 0.99, 1 - 1e-6], dtype)


def test_gradient_at_rho_zero_is_finite_and_kl_flat():
    rho = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for m in [2, 3, 4, 6, 100]:
        (grad,) = torch.autograd.grad(spherical_cauchy_kl_to_uniform(rho, m).sum(), rho)
        assert (grad == 0).all()
        loc = unit_vector(m).expand(3, m)
        x = SphericalCauchy(loc, rho).rsample((5,))
        (grad,) = torch.autograd.grad(x.sum(), rho)
        assert torch.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# Shapes and bad input.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_rho", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_rho_raises(bad_rho):
    with pytest.raises(ValueError, match="rho"):
        SphericalCauchy(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(bad_rho), validate_args=True)
