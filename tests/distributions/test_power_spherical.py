"""Tests of the Power Spherical distribution (hsvae.distributions.power_spherical).

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m).
Independent oracles: mpmath quadrature of the defining density over t = mu.x, proportional to
(1 - t^2)^((m-3)/2) (1 + t)^kappa (De Cao and Aziz, 2020), normalised numerically (so the
closed-form normaliser is checked, not assumed); scipy's Beta law for the Kolmogorov-Smirnov
test of t. Statistical checks use 5 standard errors estimated from the sample.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import pytest
import scipy.stats
import torch

from hsvae.distributions import PowerSpherical
from hsvae.distributions._sphere import log_sphere_surface
from hsvae.distributions.power_spherical import (
    _beta_product_parts,
    _BetaProductSample,
    _tangent_parts,
    _TangentSample,
    power_spherical_kl_to_uniform,
)
from tests.distribution_checks import (
    ORACLE_DIMS,
    STAT_DIMS,
    assert_finite_everywhere,
    assert_fused_node_matches_autograd,
    unit_vector,
)

ORACLE_KAPPAS = [0.0, 1e-6, 1e-3, 1.0, 10.0, 1e2, 1e4, 1e5]


# ----------------------------------------------------------------------------------------------
# mpmath oracle over y = 1 - t in [0, 2]: density proportional to y^((m-3)/2) (2 - y)^((m-3)/2 + kappa).
# ----------------------------------------------------------------------------------------------


def _y_integral(m: int, kappa: float, g, dps: int = 20) -> mp.mpf:
    """Integral over y of the unnormalised density times g(y)."""
    mp.mp.dps = dps
    kappa = mp.mpf(kappa)
    a = mp.mpf(m - 3) / 2

    def integrand(y):
        return mp.exp(a * mp.log(y) + (a + kappa) * mp.log(2 - y)) * g(y)

    # mass near y ~ (m - 1) / kappa for large kappa: geometric breakpoints around that scale
    scale = mp.mpf(m) / (kappa + m)
    inner = {v for k in range(-8, 6, 2) if (v := scale * mp.mpf(2) ** k) < mp.mpf(1.5)}
    points = sorted({mp.mpf(0), mp.mpf(2)} | inner)
    return mp.quad(integrand, points)


@functools.lru_cache(maxsize=None)
def oracle_kl(m: int, kappa: float) -> float:
    """KL = kappa E[log(1 + t)] - log Z(kappa) + log Z(0), every piece by quadrature."""
    if kappa == 0.0:
        return 0.0
    z = _normaliser(m, kappa)
    e_log = _y_integral(m, kappa, lambda y: mp.log(2 - y)) / z
    return float(mp.mpf(kappa) * e_log - mp.log(z) + mp.log(_normaliser(m, 0.0)))


@functools.lru_cache(maxsize=None)
def _normaliser(m: int, kappa: float) -> mp.mpf:
    return _y_integral(m, kappa, lambda y: 1)


@functools.lru_cache(maxsize=None)
def oracle_log_normaliser(m: int, kappa: float) -> float:
    """log of 1 / (|S^(m-2)| * integral of (1 - t^2)^((m-3)/2) (1 + t)^kappa dt)."""
    return float(-mp.log(_normaliser(m, kappa)) - log_sphere_surface(m - 1))


def _beta_params(m: int, kappa: float) -> tuple[float, float]:
    return (m - 1) / 2 + kappa, (m - 1) / 2


# ----------------------------------------------------------------------------------------------
# Closed forms against the oracle.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", ORACLE_DIMS)
def test_kl_matches_mpmath_quadrature(m):
    kappa = torch.tensor(ORACLE_KAPPAS, dtype=torch.float64)
    kl = power_spherical_kl_to_uniform(kappa, m)
    for k, value in zip(ORACLE_KAPPAS, kl.tolist()):
        reference = oracle_kl(m, k)
        # float64 lgamma values of size ~m log m cancel to the KL: ~1e-12 absolute at m = 4097
        assert abs(value - reference) <= max(1e-6 * reference, 1e-9), (m, k, value, reference)


@pytest.mark.parametrize("m", [2, 3, 10, 257, 4097])
def test_log_prob_matches_the_numerically_normalised_density(m):
    """log_prob(x) = log(1 / Z) + kappa log(1 + t) with Z by quadrature: log_prob integrates to one."""
    loc = unit_vector(m, seed=1)
    tangent = torch.randn(m, dtype=torch.float64)
    tangent = tangent - (tangent @ loc) * loc
    tangent = tangent / tangent.norm()
    t = 0.3
    x = t * loc + math.sqrt(1 - t * t) * tangent
    for kappa in [0.0, 1e-3, 1.0, 1e2, 1e5]:
        value = PowerSpherical(loc, torch.tensor(kappa, dtype=torch.float64)).log_prob(x).item()
        expected = oracle_log_normaliser(m, kappa) + kappa * math.log1p(t)
        assert value == pytest.approx(expected, rel=1e-10, abs=1e-9), (m, kappa)


@pytest.mark.parametrize("m", [2, 10, 1025])
@pytest.mark.parametrize("kappa", [1e-2, 1.0, 1e4])
def test_kl_derivative_matches_finite_differences_of_the_oracle(m, kappa):
    k = torch.tensor([kappa], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(power_spherical_kl_to_uniform(k, m).sum(), k)
    h = 1e-4 * kappa
    fd = (oracle_kl(m, kappa + h) - oracle_kl(m, kappa - h)) / (2 * h)
    assert grad.item() == pytest.approx(fd, rel=1e-6)


def test_kl_gradcheck_and_gradgradcheck_float64():
    for m in [2, 3, 11, 300]:
        kappa = torch.tensor([0.0, 1e-3, 0.5, 7.0, 40.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda k: power_spherical_kl_to_uniform(k, m), (kappa,))
        assert torch.autograd.gradgradcheck(lambda k: power_spherical_kl_to_uniform(k, m), (kappa,))


def test_kl_float32_matches_float64():
    kappa = torch.tensor(ORACLE_KAPPAS[3:], dtype=torch.float32)
    for m in [2, 65, 4097]:
        kl32 = power_spherical_kl_to_uniform(kappa, m)
        assert kl32.dtype == torch.float32
        torch.testing.assert_close(kl32.double(), power_spherical_kl_to_uniform(kappa.double(), m), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------------------------
# Samples.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", STAT_DIMS)
@pytest.mark.parametrize("kappa", [0.0, 1e-3, 1.0, 30.0, 1e3, 1e5])
def test_samples_unit_mean_and_beta_law(m, kappa):
    torch.manual_seed(100 * m + round(math.log10(kappa + 1e-9)))
    n = 20_000 if m <= 65 else 5_000
    loc = unit_vector(m, seed=m)
    x = PowerSpherical(loc, torch.tensor(kappa, dtype=torch.float64)).sample((n,))
    assert x.shape == (n, m)
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-12
    alpha, beta = _beta_params(m, kappa)
    mean_t = (alpha - beta) / (alpha + beta)
    # E[x] = E[t] mu, coordinate by coordinate, within 5 standard errors
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - mean_t * loc).abs() <= 5 * se + 1e-12).all()
    # (1 - t) / 2 = |x - mu|^2 / 4 ~ Beta(beta, alpha), computed without cancellation near t = 1
    one_minus_b = ((x - loc).square().sum(-1) / 4).numpy()
    result = scipy.stats.kstest(one_minus_b, scipy.stats.beta(beta, alpha).cdf)
    assert result.pvalue > 1e-3, result


# ----------------------------------------------------------------------------------------------
# Reparameterisation gradients.
# ----------------------------------------------------------------------------------------------


def test_fused_sampler_backward_matches_autograd():
    """The hand-written VJP equals plain autograd through the same operations; double backward too."""
    torch.manual_seed(0)
    for m in [2, 3, 7, 40]:
        loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=torch.float64), dim=-1).requires_grad_()
        g_a = torch._standard_gamma(torch.tensor([0.6, 2.0, 30.0, 500.0], dtype=torch.float64).expand(3, 4))
        noise = torch.randn(3, 4, m, dtype=torch.float64)
        assert_fused_node_matches_autograd(_TangentSample, _tangent_parts, (noise,), (loc, g_a.requires_grad_()))


@pytest.mark.parametrize("m", [3, 5, 11])
def test_beta_product_sampler_backward_matches_autograd(m):
    """Odd m: the Gamma-free sampler's hand-written VJP equals plain autograd, with a sample axis
    broadcast against the batch; gradcheck and gradgradcheck (double backward) too."""
    torch.manual_seed(m)
    beta = (m - 1) // 2
    loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=torch.float64), dim=-1).requires_grad_()
    kappa = torch.tensor([0.0, 0.7, 30.0, 5e4], dtype=torch.float64, requires_grad=True)
    noise = torch.randn(3, 4, m, dtype=torch.float64)
    log_u = torch.rand(3, 4, *((beta,) if beta > 1 else ()), dtype=torch.float64).log()
    x = assert_fused_node_matches_autograd(
        _BetaProductSample, _beta_product_parts, (noise, log_u), (loc, kappa),
        check_params=(loc, torch.tensor([0.3, 0.7, 3.0, 9.0], dtype=torch.float64)))
    assert torch.allclose(x.norm(dim=-1), torch.ones(3, 4, dtype=torch.float64), atol=1e-12)


def test_beta_product_sampler_is_finite_when_every_uniform_is_zero():
    """Every U = 1 gives w = 0 (B = 1), an infinite pathwise derivative; the clamp keeps samples and gradients finite."""
    for m in (3, 5):
        loc = torch.nn.functional.normalize(torch.randn(2, m), dim=-1).requires_grad_()
        kappa = torch.tensor([1.0, 1e4], requires_grad=True)
        shape = (2,) + (((m - 1) // 2,) if m > 3 else ())
        x = _BetaProductSample.apply(torch.randn(2, m), torch.zeros(shape), loc, kappa)
        x.sum().backward()
        assert torch.isfinite(x).all() and torch.isfinite(loc.grad).all() and torch.isfinite(kappa.grad).all()


# ----------------------------------------------------------------------------------------------
# Robustness: finite values and gradients everywhere in the valid range.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", ORACLE_DIMS)
def test_finite_everywhere(m, dtype):
    assert_finite_everywhere(PowerSpherical, m, [0.0, 1e-6, 1e-3, 1.0, 1e2, 1e4, 1e6], dtype)


# ----------------------------------------------------------------------------------------------
# Shapes and bad input.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_kappa", [-1e-3, float("inf"), float("nan")])
def test_bad_kappa_raises(bad_kappa):
    with pytest.raises(ValueError, match="kappa"):
        PowerSpherical(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(bad_kappa), validate_args=True)


def test_mean_is_the_beta_mean_and_kappa_zero_is_uniform():
    """E[x] = E[2B - 1] mu = kappa / (m - 1 + kappa) mu; at kappa = 0 (the uniform) the entropy is log|S^(m-1)|.
    (Shapes, validation and the shared laws: test_spherical_families.py.)"""
    loc = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    torch.testing.assert_close(PowerSpherical(loc, 5.0).mean, 5.0 / 8.0 * loc)
    uniform = PowerSpherical(torch.tensor([1.0, 0.0]), 0.0, validate_args=False)
    assert uniform.entropy().item() == pytest.approx(log_sphere_surface(2))
