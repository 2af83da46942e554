"""Tests of the uniform prior on the sphere and of the Gaussian posterior / prior.

Dimension convention: HypersphericalUniform(m) lives on S^(m-1) in R^m (m ambient); the
Gaussian lives in R^d. Oracles: mpmath for the sphere's area, numpy / scipy closed forms and
quadrature for the Gaussian. Statistical checks use 5 standard errors estimated from the sample.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import scipy.integrate
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import DiagonalNormal, HypersphericalUniform, StandardNormal
from hsvae.distributions._sphere import log_sphere_surface

# ----------------------------------------------------------------------------------------------
# HypersphericalUniform
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 4, 5, 10, 257, 4097])
def test_uniform_log_prob_is_minus_log_area(m):
    area = 2 * mp.pi ** (mp.mpf(m) / 2) / mp.gamma(mp.mpf(m) / 2)
    p = HypersphericalUniform(m, dtype=torch.float64)
    x = p.sample((3,))
    torch.testing.assert_close(p.log_prob(x), torch.full((3,), -float(mp.log(area)), dtype=torch.float64))
    assert p.entropy().item() == pytest.approx(float(mp.log(area)), rel=1e-13)
    known = {2: 2 * math.pi, 3: 4 * math.pi, 4: 2 * math.pi**2}
    if m in known:
        assert math.exp(log_sphere_surface(m)) == pytest.approx(known[m], rel=1e-13)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_uniform_density_integrates_to_one_monte_carlo(m):
    """|S^(m-1)| = m |B^m| with |B^m| = 2^m P(cube point in the ball): exp(log_prob) |S| = 1."""
    torch.manual_seed(m)
    n = 400_000
    inside = ((torch.rand(n, m, dtype=torch.float64) * 2 - 1).norm(dim=-1) <= 1).double()
    area = m * 2**m * inside.mean().item()
    se = m * 2**m * inside.std().item() / math.sqrt(n)
    density = HypersphericalUniform(m, dtype=torch.float64).log_prob(torch.eye(m, dtype=torch.float64)[0]).exp().item()
    assert abs(density * area - 1.0) <= 5 * se * density


@pytest.mark.parametrize("m", [2, 3, 10, 65])
def test_uniform_samples_unit_centred_isotropic(m):
    torch.manual_seed(10 + m)
    n = 50_000
    x = HypersphericalUniform(m, dtype=torch.float64).sample((n,))
    assert x.shape == (n, m)
    assert (x.norm(dim=-1) - 1).abs().max() < 1e-12
    assert ((x.mean(0)).abs() <= 5 * x.std(0) / math.sqrt(n)).all()
    # second moments: E[x_i^2] = 1/m and E[x_0 x_1] = 0
    sq = x[:, 0] ** 2
    assert abs(sq.mean().item() - 1 / m) <= 5 * sq.std().item() / math.sqrt(n)
    cross = x[:, 0] * x[:, 1]
    assert abs(cross.mean().item()) <= 5 * cross.std().item() / math.sqrt(n)


def test_uniform_shapes_and_expand():
    p = HypersphericalUniform(5, batch_shape=(4,))
    assert p.batch_shape == (4,) and p.event_shape == (5,)
    assert p.sample().shape == (4, 5) and p.rsample((3,)).shape == (3, 4, 5)
    assert p.log_prob(p.sample((3,))).shape == (3, 4)
    assert p.entropy().shape == (4,) and torch.equal(p.mean, torch.zeros(4, 5))
    e = p.expand((2, 4))
    assert e.batch_shape == (2, 4) and e.sample().shape == (2, 4, 5) and e.m == 5
    assert HypersphericalUniform(3, dtype=torch.float64).sample().dtype == torch.float64


@pytest.mark.parametrize("bad_m", [1, 0, -3, 2.5, "3"])
def test_uniform_bad_dimension_raises(bad_m):
    with pytest.raises(ValueError, match="m"):
        HypersphericalUniform(bad_m)


def test_uniform_validation_and_skipping_it():
    off_sphere = torch.tensor([2.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="support"):
        HypersphericalUniform(3, validate_args=True).log_prob(off_sphere)
    with pytest.raises(ValueError):
        HypersphericalUniform(3, validate_args=True).log_prob(torch.tensor([1.0, 0.0]))  # wrong event shape
    p = HypersphericalUniform(3, validate_args=False)
    assert torch.isfinite(p.log_prob(off_sphere))
    assert not p.expand((2,))._validate_args


# ----------------------------------------------------------------------------------------------
# DiagonalNormal and StandardNormal
# ----------------------------------------------------------------------------------------------


def _kl_closed_form(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2)."""
    return 0.5 * (sigma**2 + mu**2 - 1 - np.log(sigma**2)).sum(-1)


def test_gaussian_shapes_and_expand():
    loc, scale = torch.randn(6, 3), torch.rand(6, 3) + 0.1
    q = DiagonalNormal(loc, scale)
    assert q.batch_shape == (6,) and q.event_shape == (3,)
    assert q.rsample().shape == (6, 3) and q.rsample((4,)).shape == (4, 6, 3)
    assert q.log_prob(q.sample((4,))).shape == (4, 6)
    assert q.entropy().shape == (6,) and torch.equal(q.mean, loc) and torch.equal(q.mode, loc)
    assert torch.equal(q.loc, loc) and torch.equal(q.scale, scale)
    p = StandardNormal(3, batch_shape=(6,), dtype=torch.float64)
    assert p.batch_shape == (6,) and p.sample().dtype == torch.float64
    assert kl_divergence(q, StandardNormal(3)).shape == (6,)
    e = DiagonalNormal(loc[0], scale[0]).expand((2, 5))
    assert isinstance(e, DiagonalNormal) and e.batch_shape == (2, 5) and e.sample().shape == (2, 5, 3)


def test_gaussian_kl_matches_closed_form_and_monte_carlo():
    torch.manual_seed(0)
    mu = torch.randn(5, 4, dtype=torch.float64)
    sigma = torch.rand(5, 4, dtype=torch.float64) * 2 + 0.05
    q, p = DiagonalNormal(mu, sigma), StandardNormal(4, dtype=torch.float64)
    kl = kl_divergence(q, p)
    np.testing.assert_allclose(kl.numpy(), _kl_closed_form(mu.numpy(), sigma.numpy()), rtol=1e-12)
    n = 200_000
    z = q.sample((n,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    se = log_ratio.std(0) / math.sqrt(n)
    assert ((log_ratio.mean(0) - kl).abs() <= 5 * se).all()
    # entropy: 1/2 sum log(2 pi e sigma^2)
    np.testing.assert_allclose(
        q.entropy().numpy(), 0.5 * np.log(2 * np.pi * np.e * sigma.numpy() ** 2).sum(-1), rtol=1e-12
    )


def test_gaussian_log_prob_integrates_to_one():
    mu, sigma = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
    q1 = DiagonalNormal(mu[:1], sigma[:1])
    total1, _ = scipy.integrate.quad(
        lambda a: q1.log_prob(torch.tensor([a], dtype=torch.float64)).exp().item(), -30, 30
    )
    assert total1 == pytest.approx(1.0, abs=1e-9)
    q2 = DiagonalNormal(mu, sigma)
    total2, _ = scipy.integrate.dblquad(
        lambda b, a: q2.log_prob(torch.tensor([a, b], dtype=torch.float64)).exp().item(), -10, 10, -25, 25
    )
    assert total2 == pytest.approx(1.0, abs=1e-7)


def test_gaussian_reparameterisation_gradients():
    """d/dmu E[z] = 1 and d/dsigma E[z^2] = 2 sigma, by the pathwise estimator."""
    torch.manual_seed(1)
    n = 100_000
    mu = torch.full((n, 1), 0.7, dtype=torch.float64, requires_grad=True)
    sigma = torch.full((n, 1), 1.3, dtype=torch.float64, requires_grad=True)
    z = DiagonalNormal(mu, sigma).rsample()
    (z.sum() + (z**2).sum()).backward()
    # d/dmu of (z + z^2) = 1 + 2 z, mean 1 + 2 mu; d/dsigma = eps (1 + 2 z), mean 2 sigma
    for grad, expected in ((mu.grad, 1 + 2 * 0.7), (sigma.grad, 2 * 1.3)):
        assert abs(grad.mean().item() - expected) <= 5 * grad.std().item() / math.sqrt(n)


def test_gaussian_validation_and_skipping_it():
    with pytest.raises(ValueError, match="scale"):
        DiagonalNormal(torch.zeros(3), -torch.ones(3), validate_args=True)
    with pytest.raises(ValueError, match="d"):
        StandardNormal(0)
    with pytest.raises(ValueError):
        DiagonalNormal(torch.zeros(3), torch.ones(3), validate_args=True).log_prob(torch.zeros(4))
    q = DiagonalNormal(torch.zeros(3), -torch.ones(3), validate_args=False)  # no check at all
    assert q.log_prob(torch.zeros(3)).shape == ()
