"""What the three spherical families share (hsvae.distributions.SphericalDistribution), checked on each: the
density integrates to one, the KL and the entropy against Monte Carlo, the pathwise gradient in loc against each
family's mean resultant length (an independent oracle per family), shapes and ``expand``, validation and its
messages. Family-specific laws (the samplers, the KL oracles, the scale gradients) stay in the families' modules.

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m). Statistical checks use 5 standard
errors estimated from the sample.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher
from hsvae.distributions._sphere import log_sphere_surface
from tests.distribution_checks import STAT_DIMS, assert_bad_input_named, unit_vector
from tests.distributions.test_spherical_cauchy import oracle_mean_resultant as spcauchy_mean_resultant
from tests.distributions.test_von_mises_fisher import _mp_vmf

F64 = torch.float64




#: per family: the mean resultant length E[mu.x] as a function of (m, scale), from an independent oracle
MEAN_RESULTANT = {
    PowerSpherical: lambda m, kappa: kappa / (m - 1 + kappa),  # E[2B - 1], B ~ Beta((m-1)/2 + kappa, (m-1)/2)
    SphericalCauchy: spcauchy_mean_resultant,  # mpmath quadrature
    VonMisesFisher: lambda m, kappa: _mp_vmf(m, kappa)[0],  # I_(m/2) / I_(m/2-1), mpmath
}


def _cases(grid: dict) -> list:
    return [pytest.param(family, *args, id=f"{family.__name__}-{'-'.join(map(str, args))}")
            for family, cases in grid.items() for args in cases]


@pytest.mark.parametrize("family, m, scale, n", _cases({
    PowerSpherical: [(2, 1.0, 50_000), (3, 2.0, 50_000), (10, 3.0, 50_000), (65, 5.0, 50_000), (257, 5.0, 50_000)],
    SphericalCauchy: [(2, 0.5, 50_000), (3, 0.5, 50_000), (5, 0.3, 50_000), (10, 0.2, 50_000), (65, 0.05, 50_000)],
    VonMisesFisher: [(2, 1.0, 200_000), (3, 2.0, 200_000), (5, 3.0, 200_000), (10, 2.0, 200_000), (65, 4.0, 200_000)],
}))
def test_density_integrates_to_one_by_importance_sampling(family, m, scale, n):
    """E_uniform[q(x) / uniform(x)] = 1; at these (m, scale) the ratio is bounded, a finite variance."""
    torch.manual_seed(m)
    x = HypersphericalUniform(m, dtype=F64).sample((n,))
    q = family(unit_vector(m, seed=5), torch.tensor(scale, dtype=F64))
    ratio = (q.log_prob(x) + log_sphere_surface(m)).exp()
    se = ratio.std().item() / math.sqrt(n)
    assert se < 0.05  # the chosen (m, scale) keep the check informative
    assert abs(ratio.mean().item() - 1.0) <= 5 * se


@pytest.mark.parametrize("family, m, scale", _cases({
    PowerSpherical: [(m, k) for m in STAT_DIMS for k in (1e-3, 1.0, 1e2, 1e4)],
    SphericalCauchy: [(m, r) for m in STAT_DIMS for r in (0.1, 0.5, 0.9, 0.999)],
    VonMisesFisher: [(m, k) for m in STAT_DIMS for k in (0.5, 5.0, 50.0, 1e3)],
}))
def test_kl_and_entropy_match_monte_carlo(family, m, scale):
    """KL(q || uniform) = E_q[log q - log u] and H(q) = E_q[-log q] at samples of q; H = log|S^(m-1)| - KL."""
    torch.manual_seed(31 * m)
    n = 20_000 if m <= 65 else 4_000
    q = family(unit_vector(m, seed=9), torch.tensor(scale, dtype=F64))
    p = HypersphericalUniform(m, dtype=F64)
    x = q.sample((n,))
    log_ratio = q.log_prob(x) - p.log_prob(x)
    kl = kl_divergence(q, p).item()
    assert abs(log_ratio.mean().item() - kl) <= 5 * log_ratio.std().item() / math.sqrt(n) + 1e-12
    neg_log_q = -q.log_prob(x)
    assert abs(neg_log_q.mean().item() - q.entropy().item()) <= 5 * neg_log_q.std().item() / math.sqrt(n) + 1e-9
    assert q.entropy().item() == pytest.approx(log_sphere_surface(m) - kl, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("family, m, scale", _cases({
    PowerSpherical: [(3, 4.0), (10, 4.0)],
    SphericalCauchy: [(3, 0.6), (10, 0.6)],
    VonMisesFisher: [(3, 3.0), (7, 10.0)],
}))
def test_pathwise_gradient_in_loc_is_the_tangential_mean(family, m, scale):
    """E[a.x] = A a.mu (A the mean resultant length): the tangential part of the pathwise gradient in loc is
    A (I - mu mu^T) a, with A from the family's oracle."""
    torch.manual_seed(5)
    n = 40_000
    loc = unit_vector(m, seed=4).expand(n, m).clone().requires_grad_()
    a = torch.randn(m, dtype=F64)
    x = family(loc, torch.tensor(scale, dtype=F64)).rsample()
    (x @ a).sum().backward()
    mu = loc.detach()[0]
    tangential = loc.grad - (loc.grad @ mu).unsqueeze(-1) * mu
    expected = MEAN_RESULTANT[family](m, scale) * (a - (a @ mu) * mu)
    se = tangential.std(0) / math.sqrt(n)
    assert ((tangential.mean(0) - expected).abs() <= 5 * se + 1e-12).all()


def _central_difference(f, m: int, scale: float, h: float = 1e-4) -> float:
    return (f(m, scale + h) - f(m, scale - h)) / (2 * h)


#: d/dscale of the mean resultant length, from the same oracles (the vMF's kappa-gradient, biased without the
#: sampler's correction term, is tested in test_von_mises_fisher.py)
MEAN_RESULTANT_DERIVATIVE = {
    PowerSpherical: lambda m, kappa: (m - 1) / (m - 1 + kappa) ** 2,
    SphericalCauchy: lambda m, rho: _central_difference(spcauchy_mean_resultant, m, rho),
}


@pytest.mark.parametrize("family, m, scale", _cases({
    PowerSpherical: [(m, k) for m in (2, 3, 10, 11, 65) for k in (1e-3, 1.0, 10.0, 1e3)],
    SphericalCauchy: [(m, r) for m in (2, 3, 10, 65) for r in (0.2, 0.7, 0.95)],
}))
def test_pathwise_gradient_in_scale_of_the_mean_cosine(family, m, scale):
    """d/dscale E[mu.x] by the pathwise estimator (one scale per sample) against the family's oracle."""
    torch.manual_seed(17 * m + int(scale))
    n = 40_000 if m <= 10 else 10_000
    loc = unit_vector(m, seed=2)
    per_sample = torch.full((n,), scale, dtype=F64, requires_grad=True)
    x = family(loc.expand(n, m), per_sample).rsample()
    (x @ loc).sum().backward()
    grads = per_sample.grad
    se = grads.std().item() / math.sqrt(n)
    assert abs(grads.mean().item() - MEAN_RESULTANT_DERIVATIVE[family](m, scale)) <= 5 * se


#: a valid scale of each family, and one that validation refuses
SCALES = {PowerSpherical: (5.0, -2.0), SphericalCauchy: (0.5, 1.5), VonMisesFisher: (2.0, -1.0)}


@pytest.mark.parametrize("family", list(SCALES))
def test_shapes_trailing_singleton_scale_and_expand(family):
    scale = SCALES[family][0]
    torch.manual_seed(12)
    loc = torch.nn.functional.normalize(torch.randn(6, 4, dtype=F64), dim=-1)
    q = family(loc, torch.full((6, 1), scale, dtype=F64))  # the S-VAE authors' (B, 1) scale
    assert q.batch_shape == (6,) and q.event_shape == (4,)
    assert q.rsample().shape == (6, 4) and q.rsample((2, 3)).shape == (2, 3, 6, 4)
    assert q.log_prob(q.sample((3,))).shape == (3, 6)
    assert q.entropy().shape == (6,) and q.mean.shape == (6, 4) and torch.equal(q.mode, loc)
    assert kl_divergence(q, HypersphericalUniform(4, dtype=F64)).shape == (6,)
    assert kl_divergence(q, HypersphericalUniform(4, (3, 6), dtype=F64)).shape == (3, 6)
    # a python-number scale, and a loc broadcast against a batch of scales
    assert family(loc, scale).batch_shape == (6,)
    assert family(loc[0], torch.full((5,), scale, dtype=F64)).sample().shape == (5, 4)
    expanded = family(loc[0], torch.tensor(scale, dtype=F64)).expand((2, 5))
    assert expanded.batch_shape == (2, 5) and expanded.sample().shape == (2, 5, 4)
    assert expanded.log_prob(expanded.sample()).shape == (2, 5)
    torch.testing.assert_close(q.expand((3, 6)).entropy()[1], q.entropy())
    # float32 parameters stay float32
    q32 = family(loc.float(), torch.full((6,), scale))
    assert q32.sample().dtype == torch.float32 and q32.entropy().dtype == torch.float32
    # the concentration parameter under the family's own name
    alias = "rho" if family is SphericalCauchy else "concentration"
    assert getattr(q, alias) is q.scale and family.scale_name in ("kappa", "rho")


@pytest.mark.parametrize("family", list(SCALES))
def test_bad_input_raises_value_error_naming_the_parameter(family):
    off_sphere = {PowerSpherical: [0.5, 0.0, 0.0], SphericalCauchy: [2.0, 0.0, 0.0], VonMisesFisher: [1.0, 1.0, 1.0]}
    assert_bad_input_named(family, SCALES[family][0], off_sphere=off_sphere[family], other_m=5)
    with pytest.raises(ValueError, match=f"scale \\({family.scale_name}\\) must be"):
        family(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(SCALES[family][1]), validate_args=True)


@pytest.mark.parametrize("family", list(SCALES))
def test_validate_args_false_skips_the_checks(family):
    q = family(torch.tensor([3.0, 0.0, 0.0]), torch.tensor(SCALES[family][1]), validate_args=False)
    q.log_prob(torch.tensor([2.0, 0.0, 0.0]))  # no check, whatever the value
    assert not q._validate_args and not q.expand((2,))._validate_args
    unchecked = family(torch.tensor([1.0, 0.0, 0.0]), torch.tensor(SCALES[family][0]), validate_args=False)
    assert torch.isfinite(unchecked.log_prob(torch.tensor([0.0, 1.0, 0.0])))
