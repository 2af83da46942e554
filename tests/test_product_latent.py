"""The product-of-spheres latent (Davidson et al. 2019): samples on each factor's sphere, the KL the sum of the
factors' (against Monte Carlo too), gradients against finite differences, the vMF factors' gradient correction
adding up, and bad factor lists refused by key.

Dimension convention: ``latent.dim`` is the total intrinsic dimension d = d_1 + ... + d_K; a sample has d + K
coordinates, d_i + 1 per factor.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import HypersphericalUniform, ProductOfSpheres, VonMisesFisher, monte_carlo_kl
from hsvae.distributions._sphere import log_sphere_surface
from hsvae.latents import ProductSphereLatent, SphericalCauchyLatent, VonMisesFisherLatent

F64 = torch.float64


@pytest.mark.parametrize("factors, factor", [([1, 1, 1], VonMisesFisherLatent), ([4, 4], VonMisesFisherLatent),
                                             ([2, 1], SphericalCauchyLatent)])
def test_samples_lie_on_each_factors_sphere_and_the_kl_adds_up(factors, factor):
    torch.manual_seed(0)
    latent = ProductSphereLatent(sum(factors), factors, factor=factor).double()
    assert latent.event_size == sum(factors) + len(factors) and latent.spheres == tuple(d + 1 for d in factors)
    q = latent.posterior(torch.randn(7, latent.raw_size, dtype=F64))
    z = latent.rsample(q, (5,)).z
    assert z.shape == (5, 7, latent.event_size)
    for block in z.split(latent.spheres, dim=-1):
        torch.testing.assert_close(block.norm(dim=-1), torch.ones(5, 7, dtype=F64))
    kl = latent.kl(q)
    parts = sum(kl_divergence(f, HypersphericalUniform(f.m, dtype=F64)) for f in q.factors)
    torch.testing.assert_close(kl, parts)
    torch.testing.assert_close(q.entropy(), sum(f.entropy() for f in q.factors))
    log_prob = q.log_prob(z)
    torch.testing.assert_close(log_prob, sum(f.log_prob(b) for f, b in zip(q.factors, q.split(z))))
    # the prior is the product of the factors' uniforms
    expected = -sum(log_sphere_surface(d + 1) for d in factors)
    torch.testing.assert_close(latent.prior().log_prob(z[0]), torch.full((7,), expected, dtype=F64))
    estimate = monte_carlo_kl(q, latent.prior(torch.zeros((), dtype=F64)), 20_000)
    assert ((kl - estimate.estimate).abs() <= 5 * estimate.standard_error + 1e-9).all()


def test_kl_gradient_matches_finite_differences():
    latent = ProductSphereLatent(3, [1, 2]).double()
    raw = torch.randn(4, latent.raw_size, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: latent.kl(latent.posterior(r)), (raw,))


def test_reparameterised_sample_gradient_matches_finite_differences():
    """With the noise fixed (same seed), the sample is a differentiable function of the raw outputs."""
    latent = ProductSphereLatent(2, [1, 1], factor=SphericalCauchyLatent).double()
    raw = torch.randn(3, latent.raw_size, dtype=F64, requires_grad=True)

    def sample(r):
        torch.manual_seed(4)
        return latent.rsample(latent.posterior(r)).z

    assert torch.autograd.gradcheck(sample, (raw,))


def test_vmf_factors_with_gradient_correction_add_their_scores():
    factor = functools.partial(VonMisesFisherLatent, grad_correction=True)
    latent = ProductSphereLatent(7, [3, 4], factor=factor).double()  # (S^2 samples exactly: no correction)
    q = latent.posterior(torch.randn(6, latent.raw_size, dtype=F64, requires_grad=True))
    draw = latent.rsample(q)
    assert draw.score is not None and draw.score.shape == (6,) and torch.all(draw.score == 0)
    assert draw.score.requires_grad and draw.needs_per_draw_terms


def test_mismatched_factor_pairs_and_bad_factor_lists_are_refused():
    with pytest.raises(ValueError, match=r"factors \[2, 2\] sum to 4, but dim .* is 5"):
        ProductSphereLatent(5, [2, 2])
    with pytest.raises(ValueError, match="factors must be intrinsic dimensions >= 1"):
        ProductSphereLatent(2, [2, 0])
    with pytest.raises(ValueError, match="factors must be"):
        ProductSphereLatent(1, [])
    assert ProductSphereLatent(3).spheres == (2, 2, 2)  # default: dim circles
    a = ProductOfSpheres([VonMisesFisher(torch.tensor([1.0, 0.0]), 1.0)])
    b = ProductOfSpheres([HypersphericalUniform(3)])
    with pytest.raises(ValueError, match="different factors"):
        kl_divergence(a, b)
