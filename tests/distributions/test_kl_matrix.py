"""The KL matrix of the spherical families (hsvae.distributions.kl): every registered pair against a Monte-Carlo
estimate (5 standard errors) over m up to 1025, against mpmath where the closed form has an independent
quadrature or series, zero at q = p, finite with finite gradients in float32 and float64 over the robustness grid;
the pairs without a closed form raise instead of estimating, and monte_carlo_kl gives the estimate by name.

Dimension convention: m is the ambient dimension (S^(m-1) in R^m).
"""

from __future__ import annotations

import math

import mpmath as mp
import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import (
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    VonMisesFisher,
    monte_carlo_kl,
)
from tests.distribution_checks import unit_vector

F64 = torch.float64
DIMS = [2, 3, 5, 10, 65, 257, 1025]

#: q families and a few of their scales (concentrations from near-uniform to peaked)
Q_SCALES = {VonMisesFisher: (0.5, 5.0, 200.0), PowerSpherical: (0.1, 5.0, 200.0), SphericalCauchy: (0.1, 0.6, 0.95)}


def _q(family, m, scale, seed=1):
    if family is HypersphericalUniform:
        return HypersphericalUniform(m, dtype=F64)
    return family(unit_vector(m, seed=seed), torch.tensor(scale, dtype=F64))


def _pairs():
    """(q family, q scale, p family, p scale) of every registered pair."""
    out = []
    for q_family, scales in Q_SCALES.items():
        for scale in scales:
            for kappa_p in (1.0, 30.0):
                out.append((q_family, scale, VonMisesFisher, kappa_p))
    for kappa_p in (0.5, 5.0, 100.0):
        out.append((HypersphericalUniform, None, VonMisesFisher, kappa_p))
        out.append((HypersphericalUniform, None, PowerSpherical, kappa_p))
    for rho in (0.1, 0.6, 0.95):
        out.append((HypersphericalUniform, None, SphericalCauchy, rho))
    for rho_q, rho_p in ((0.1, 0.6), (0.6, 0.95), (0.95, 0.3)):
        out.append((SphericalCauchy, rho_q, SphericalCauchy, rho_p))
    out.append((HypersphericalUniform, None, HypersphericalUniform, None))
    return out


@pytest.mark.parametrize("m", DIMS)
@pytest.mark.parametrize("q_family, q_scale, p_family, p_scale", _pairs(),
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_registered_kl_matches_monte_carlo(m, q_family, q_scale, p_family, p_scale):
    torch.manual_seed(m)
    q, p = _q(q_family, m, q_scale, seed=1), _q(p_family, m, p_scale, seed=2)
    n = 20_000 if m <= 257 else 4_000
    closed = kl_divergence(q, p)
    estimate = monte_carlo_kl(q, p, n)
    assert closed.shape == estimate.estimate.shape
    assert torch.isfinite(closed).all() and (closed >= 0).all()
    assert abs(closed.item() - estimate.estimate.item()) <= 5 * estimate.standard_error.item() + 1e-9


@pytest.mark.parametrize("m", [2, 3, 10, 257, 1025])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 30.0, 1e4])
def test_uniform_to_vmf_is_log_hyp0f1_by_mpmath(m, kappa):
    """KL(U || vMF) = -log|S| - log C_m(kappa) = log 0F1(; m/2; kappa^2/4), here by mpmath's series."""
    with mp.workdps(40):
        expected = float(mp.log(mp.hyp0f1(mp.mpf(m) / 2, mp.mpf(kappa) ** 2 / 4)))
    got = kl_divergence(HypersphericalUniform(m, dtype=F64), _q(VonMisesFisher, m, kappa)).item()
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("m", [2, 3, 10, 257])
@pytest.mark.parametrize("k1, k2", [(0.5, 2.0), (5.0, 1.0), (300.0, 250.0), (1e3, 1e4)])
def test_vmf_to_vmf_at_one_direction_by_mpmath(m, k1, k2):
    """KL(vMF(mu, k1) || vMF(mu, k2)) = (k1 - k2) A(k1) + log C(k1) - log C(k2), Bessel functions by mpmath."""
    with mp.workdps(60):
        v = mp.mpf(m) / 2 - 1

        def log_c(k):
            return v * mp.log(k) - (mp.mpf(m) / 2) * mp.log(2 * mp.pi) - mp.log(mp.besseli(v, k))

        a1 = mp.besseli(v + 1, k1) / mp.besseli(v, k1)
        expected = float((mp.mpf(k1) - k2) * a1 + log_c(mp.mpf(k1)) - log_c(mp.mpf(k2)))
    mu = unit_vector(m)
    got = kl_divergence(VonMisesFisher(mu, torch.tensor(k1, dtype=F64)), VonMisesFisher(mu, torch.tensor(k2, dtype=F64)))
    assert got.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3, 5, 10, 257])
@pytest.mark.parametrize("kappa", [0.1, 3.0, 1e3])
def test_uniform_to_power_spherical_by_mpmath_quadrature(m, kappa):
    """KL(U || PS) = -E_U[log p], with E_U[log(1 + mu.x)] by quadrature of the uniform's law of t = mu.x
    ((1 - t^2)^((m-3)/2), normalised numerically) and p's normaliser by quadrature too."""
    with mp.workdps(30):
        a = (mp.mpf(m) - 3) / 2

        def integral(g):  # over y = 1 - t in (0, 2)
            return mp.quad(lambda y: mp.exp(a * (mp.log(y) + mp.log(2 - y))) * g(y), [0, 1, 2])

        area_ratio = integral(lambda y: 1)  # |S^(m-1)| / |S^(m-2)|
        e_log = integral(lambda y: mp.log(2 - y)) / area_ratio
        z_p = integral(lambda y: mp.exp(kappa * mp.log(2 - y))) / area_ratio  # E_U[(1 + t)^kappa]
        expected = float(-(kappa * e_log) + mp.log(z_p))
    got = kl_divergence(HypersphericalUniform(m, dtype=F64), _q(PowerSpherical, m, kappa)).item()
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3, 65, 1025])
@pytest.mark.parametrize("kappa", [0.5, 5.0, 200.0, 1e4])
def test_a_vmf_to_itself_and_the_uniform_to_itself_are_zero(m, kappa):
    """No cancellation of large terms at q = p: every summand of the closed form is small there."""
    q = _q(VonMisesFisher, m, kappa)
    assert kl_divergence(q, q).item() == pytest.approx(0.0, abs=1e-12 * max(1.0, kappa))
    uniform = HypersphericalUniform(m, dtype=F64)
    assert kl_divergence(uniform, uniform).item() == 0.0
    rho = torch.tensor([0.0, 0.5, 0.999], dtype=F64, requires_grad=True)
    cauchy = SphericalCauchy(unit_vector(m).expand(3, m), rho)
    kl = kl_divergence(cauchy, cauchy)
    assert torch.equal(kl.detach(), torch.zeros(3, dtype=F64))
    (grad,) = torch.autograd.grad(kl.sum(), rho)
    assert torch.equal(grad, torch.zeros(3, dtype=F64))  # the minimum


def _wrapped_or_spherical_cauchy_density(m, w):
    """mpmath density of the spherical Cauchy with parameter w = rho mu (a tuple), on S^(m-1), m = 2 or 3."""
    area = 2 * mp.pi if m == 2 else 4 * mp.pi
    r2 = sum(c * c for c in w)
    return lambda x: ((1 - r2) / sum((a - b) ** 2 for a, b in zip(x, w))) ** (m - 1) / area


@pytest.mark.parametrize("m", [2, pytest.param(3, marks=pytest.mark.slow)])  # (S^2: a 2-d quadrature, ~10 s each)
@pytest.mark.parametrize("rho_q, rho_p, cos", [(0.3, 0.7, 0.2), (0.9, 0.5, -0.6), (0.6, 0.6, 1.0)])
def test_spherical_cauchy_pair_by_mpmath_quadrature(m, rho_q, rho_p, cos):
    """KL(q || p) = integral of q log(q / p) over the circle (m = 2) or the sphere (m = 3, in polar angles about
    mu_q), by mpmath quadrature of the two densities: independent of the Moebius-invariance argument."""
    sin = math.sqrt(1 - cos * cos)
    mu_q, mu_p = [1.0, 0.0, 0.0][:m], [cos, sin, 0.0][:m]
    with mp.workdps(20):
        fq = _wrapped_or_spherical_cauchy_density(m, [rho_q * c for c in mu_q])
        fp = _wrapped_or_spherical_cauchy_density(m, [rho_p * c for c in mu_p])
        if m == 2:
            def integrand(t):
                x = (mp.cos(t), mp.sin(t))
                return fq(x) * mp.log(fq(x) / fp(x))
            expected = mp.quad(integrand, mp.linspace(-mp.pi, mp.pi, 9))
        else:
            def integrand(theta, phi):
                x = (mp.cos(theta), mp.sin(theta) * mp.cos(phi), mp.sin(theta) * mp.sin(phi))
                return fq(x) * mp.log(fq(x) / fp(x)) * mp.sin(theta)
            expected = mp.quad(integrand, mp.linspace(0, mp.pi, 5), mp.linspace(0, 2 * mp.pi, 5))
    q = SphericalCauchy(torch.tensor(mu_q, dtype=F64), torch.tensor(rho_q, dtype=F64))
    p = SphericalCauchy(torch.tensor(mu_p, dtype=F64), torch.tensor(rho_p, dtype=F64))
    assert kl_divergence(q, p).item() == pytest.approx(float(expected), rel=1e-7, abs=1e-10)
    assert kl_divergence(p, q).item() == pytest.approx(kl_divergence(q, p).item(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", [2, 3, 10, 257, 1025])
def test_finite_with_finite_gradients_over_the_robustness_grid(m, dtype):
    grids = {VonMisesFisher: [1e-4, 1.0, 1e2, 1e4], PowerSpherical: [0.0, 1e-3, 1.0, 1e4],
             SphericalCauchy: [0.0, 1e-6, 0.5, 0.999]}
    torch.manual_seed(m)
    kappa_p = torch.tensor([1e-4, 1.0, 1e2, 1e4], dtype=dtype, requires_grad=True)
    loc_p = torch.nn.functional.normalize(torch.randn(4, m, dtype=dtype), dim=-1).requires_grad_()
    p = VonMisesFisher(loc_p, kappa_p)
    for family, values in grids.items():
        scale = torch.tensor(values, dtype=dtype, requires_grad=True)
        loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=dtype), dim=-1).requires_grad_()
        kl = kl_divergence(family(loc, scale), p)
        assert kl.dtype == dtype and torch.isfinite(kl).all() and (kl >= 0).all(), (family.__name__, kl)
        grads = torch.autograd.grad(kl.sum(), (scale, loc, kappa_p, loc_p))
        assert all(torch.isfinite(g).all() for g in grads), family.__name__
    rho_p = torch.tensor([0.0, 1e-6, 0.5, 0.999], dtype=dtype, requires_grad=True)
    q_rho = torch.tensor(grids[SphericalCauchy][::-1], dtype=dtype, requires_grad=True)
    q_loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=dtype), dim=-1).requires_grad_()
    kl = kl_divergence(SphericalCauchy(q_loc, q_rho), SphericalCauchy(loc_p, rho_p))
    assert kl.dtype == dtype and torch.isfinite(kl).all() and (kl >= 0).all(), kl
    grads = torch.autograd.grad(kl.sum(), (q_rho, q_loc, rho_p, loc_p))
    assert all(torch.isfinite(g).all() for g in grads)
    uniform = HypersphericalUniform(m, dtype=dtype)
    for p_family, values in grids.items():
        scale = torch.tensor(values, dtype=dtype, requires_grad=True)
        kl = kl_divergence(uniform, p_family(torch.nn.functional.normalize(torch.randn(4, m, dtype=dtype), dim=-1),
                                             scale))
        assert torch.isfinite(kl).all() and (kl >= 0).all(), (p_family.__name__, kl)
        (grad,) = torch.autograd.grad(kl.sum(), scale)
        assert torch.isfinite(grad).all(), p_family.__name__


@pytest.mark.parametrize("q_family, p_family", [(VonMisesFisher, PowerSpherical), (PowerSpherical, PowerSpherical),
                                               (SphericalCauchy, PowerSpherical), (VonMisesFisher, SphericalCauchy),
                                               (PowerSpherical, SphericalCauchy)])
def test_pairs_without_a_closed_form_raise_and_monte_carlo_is_asked_for_by_name(q_family, p_family):
    q, p = _q(q_family, 5, Q_SCALES[q_family][1]), _q(p_family, 5, Q_SCALES[p_family][1], seed=2)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, p)
    estimate = monte_carlo_kl(q, p, 4000)
    assert estimate.estimate.item() > 0 and 0 < estimate.standard_error.item() < 0.1


def test_monte_carlo_kl_carries_a_gradient_and_checks_its_sample_count():
    kappa = torch.tensor(3.0, dtype=F64, requires_grad=True)
    q = PowerSpherical(unit_vector(4), kappa)
    estimate = monte_carlo_kl(q, HypersphericalUniform(4, dtype=F64), 2000)
    (grad,) = torch.autograd.grad(estimate.estimate, kappa)
    assert torch.isfinite(grad) and grad > 0  # the KL to the uniform grows with the concentration
    with pytest.raises(ValueError, match="samples"):
        monte_carlo_kl(q, HypersphericalUniform(4), 1)


def test_spheres_must_match():
    with pytest.raises(ValueError, match="ambient dimensions differ"):
        kl_divergence(_q(PowerSpherical, 4, 1.0), _q(VonMisesFisher, 5, 1.0))
    with pytest.raises(ValueError, match="ambient dimensions differ"):
        kl_divergence(HypersphericalUniform(4), _q(SphericalCauchy, 5, 0.5))
    assert math.isfinite(kl_divergence(HypersphericalUniform(5), _q(SphericalCauchy, 5, 0.5)).item())
