"""Priors as a choice (``latent.prior``, hsvae.latents.priors). The learnt vMF prior: its KL is the registered closed
form, gradients reach its parameters (against finite differences), training on the KL alone moves it towards the
posteriors. The mixtures (vMF on the sphere, diagonal normals in R^d): the log-density is the log-sum-exp over the
components, the Monte-Carlo KL is unbiased (its mean against quadrature of the KL integral, 5 standard errors) and
trains every prior parameter. The learnt diagonal Gaussian: the closed form. Runs train with a learnt prior from the
command line; a prior that does not fit the latent, a mixture of 0 components and a closed form requested for a
pair without one are refused by key before training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import MixtureSameFamily, kl_divergence
from torch.nn import functional as F

from hsvae.distributions import DiagonalNormal, HypersphericalUniform, PowerSpherical, VonMisesFisher
from hsvae.latents import GaussianLatent, PowerSphericalLatent, SphericalCauchyLatent, VonMisesFisherLatent

F64 = torch.float64


@pytest.mark.parametrize("family", [VonMisesFisherLatent, SphericalCauchyLatent, PowerSphericalLatent])
def test_the_kl_is_the_closed_form_to_the_learnt_prior(family):
    torch.manual_seed(0)
    latent = family(3, prior="vmf").double()
    assert isinstance(family(3).prior(), HypersphericalUniform)  # the default stays the uniform
    q = latent.posterior(torch.randn(5, latent.raw_size, dtype=F64))
    p = latent.prior()
    assert isinstance(p, VonMisesFisher) and p.scale.item() == pytest.approx(F.softplus(torch.tensor(-4.0)).item() + 1e-6)
    torch.testing.assert_close(latent.kl(q), kl_divergence(q, p))
    # near the uniform at the start: the KL to the learnt prior is close to the KL to the uniform
    torch.testing.assert_close(latent.kl(q), kl_divergence(q, HypersphericalUniform(4, dtype=F64)), atol=0.05, rtol=0)


def test_gradients_reach_the_prior_and_match_finite_differences():
    torch.manual_seed(1)
    latent = VonMisesFisherLatent(2, prior="vmf").double()
    q = latent.posterior(torch.randn(4, latent.raw_size, dtype=F64))

    def kl(direction, raw_kappa):
        p = VonMisesFisher(F.normalize(direction, dim=0), F.softplus(raw_kappa) + 1e-6)
        return kl_divergence(q, p).sum()

    inputs = (torch.tensor([0.3, -0.5, 0.8], dtype=F64, requires_grad=True),
              torch.tensor(0.7, dtype=F64, requires_grad=True))
    assert torch.autograd.gradcheck(kl, inputs)
    latent.kl(q).sum().backward()
    assert latent.prior_module.direction.grad.abs().sum() > 0 and latent.prior_module.concentration_raw.grad != 0


def test_fitting_the_prior_to_concentrated_posteriors_raises_its_concentration():
    torch.manual_seed(2)
    latent = VonMisesFisherLatent(2, prior="vmf")
    target = torch.tensor([0.0, 0.0, 1.0])
    raw = torch.cat([target.expand(64, 3) + 0.05 * torch.randn(64, 3), torch.full((64, 1), 3.0)], -1)
    optimizer = torch.optim.Adam(latent.parameters(), lr=0.05)
    first = None
    for _ in range(200):
        loss = latent.kl(latent.posterior(raw)).mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = latent.prior()
    assert loss.item() < 0.5 * first and p.scale.item() > 1.0 and (p.loc @ target).item() > 0.95


def test_a_run_trains_with_a_learnt_prior_and_a_bad_prior_is_refused(tmp_path):
    from hsvae.cli.instantiation import instantiate_model
    from hsvae.utils.errors import ConfigError
    from hsvae.cli.train import train
    from tests.conftest import compose_config

    cfg = compose_config("train", ["latent.prior=vmf", "trainer.max_epochs=2", "dataset.n_train=500", "~logger",
                                   "evaluation.ll.samples=5"], tmp_path / "run")
    metrics = train(cfg)
    assert metrics["test/kl"] > 0 and metrics["test/log_likelihood"] >= metrics["test/elbo"] - 1  # (the IWAE bound)
    bad = {"latent.prior=gaussian": r"^latent\.prior must be one of \('uniform', 'vmf', 'power_spherical', 'mixture'\)",
           "latent=gaussian latent.prior=vmf": r"^latent\.prior must be one of \('standard', 'learned_diagonal', 'mixture'\)",
           "latent.prior=mixture latent.prior_components=0": r"^latent\.prior_components must be an integer >= 1",
           "latent.prior=mixture latent.kl=closed_form": r"^latent\.kl=closed_form, but KL\(VonMisesFisher \|\| "
                                                         r"MixtureSameFamily\) has no closed form: set kl=monte_carlo"}
    for i, (overrides, message) in enumerate(bad.items()):
        cfg = compose_config("train", [*overrides.split(), "data_spec.input_dim=100"], tmp_path / f"bad{i}")
        with pytest.raises(ConfigError, match=message):
            instantiate_model(cfg)


def test_a_run_trains_with_a_mixture_prior_whose_kl_is_estimated(tmp_path):
    from hsvae.cli.train import train
    from tests.conftest import compose_config

    cfg = compose_config("train", ["latent.prior=mixture", "latent.prior_components=3", "trainer.max_epochs=2",
                                   "dataset.n_train=500", "~logger", "evaluation.ll.samples=5"], tmp_path / "run")
    metrics = train(cfg)
    assert math.isfinite(metrics["test/kl"]) and metrics["test/log_likelihood"] >= metrics["test/elbo"] - 1


def _circle_kl_by_quadrature(q, p, points: int = 200_000) -> float:
    """KL(q || p) on S^1 by the midpoint rule over the angle (both densities are smooth and periodic)."""
    t = (torch.arange(points, dtype=torch.float64) + 0.5) * (2 * math.pi / points)
    x = torch.stack([t.cos(), t.sin()], -1)
    log_q, log_p = q.log_prob(x), p.log_prob(x)
    return float((log_q.exp() * (log_q - log_p)).detach().sum() * (2 * math.pi / points))


def _line_kl_by_quadrature(q, p, points: int = 200_000) -> float:
    """KL(q || p) on R^1 by the midpoint rule over [-12, 12] (beyond it q is negligible here)."""
    x = (-12 + (torch.arange(points, dtype=torch.float64) + 0.5) * (24 / points)).unsqueeze(-1)
    log_q, log_p = q.log_prob(x), p.log_prob(x)
    return float((log_q.exp() * (log_q - log_p)).detach().sum() * (24 / points))


@pytest.mark.parametrize("family, dim, quadrature", [(VonMisesFisherLatent, 1, _circle_kl_by_quadrature),
                                                     (SphericalCauchyLatent, 1, _circle_kl_by_quadrature),
                                                     (GaussianLatent, 1, _line_kl_by_quadrature)])
def test_the_mixture_kl_is_an_unbiased_monte_carlo_estimate(family, dim, quadrature):
    torch.manual_seed(3)
    latent = family(dim, prior="mixture", prior_components=4).double()
    assert not latent.closed_form_kl
    with torch.no_grad():  # components apart, with unequal weights and concentrations
        for name, value in latent.prior_module.named_parameters():
            value.add_(torch.randn_like(value))
    q = latent.posterior(torch.randn(1, latent.raw_size, dtype=torch.float64))
    p = latent.prior()
    assert isinstance(p, MixtureSameFamily) and p.mixture_distribution.logits.shape == (4,)
    n = 20_000
    draws = latent.kl(q, latent.rsample(q, (n,))).detach()  # one single-sample estimate per draw
    expected = quadrature(q, p)
    assert abs(draws.mean().item() - expected) <= 5 * draws.std().item() / n**0.5


def test_the_mixture_log_density_is_the_log_sum_exp_of_its_components():
    torch.manual_seed(4)
    latent = VonMisesFisherLatent(4, prior="mixture", prior_components=5).double()
    p, z = latent.prior(), F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=-1)
    components = p.component_distribution
    weights = torch.log_softmax(latent.prior_module.logits.double(), 0)
    by_hand = torch.logsumexp(weights + components.log_prob(z.unsqueeze(-2)), -1)
    torch.testing.assert_close(p.log_prob(z), by_hand)
    assert p.sample((3,)).shape == (3, 5) and torch.allclose(p.sample((3,)).norm(dim=-1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("family", [VonMisesFisherLatent, GaussianLatent])
def test_the_monte_carlo_kl_trains_every_parameter_of_a_mixture_prior(family):
    torch.manual_seed(5)
    latent = family(2, prior="mixture", prior_components=3)
    q = latent.posterior(torch.randn(8, latent.raw_size))
    latent.kl(q, latent.rsample(q)).sum().backward()
    for name, value in latent.prior_module.named_parameters():
        assert value.grad is not None and value.grad.abs().sum() > 0, name


def test_the_learnt_diagonal_gaussian_prior_has_the_closed_form_and_starts_standard():
    torch.manual_seed(6)
    latent = GaussianLatent(3, prior="learned_diagonal").double()
    assert latent.closed_form_kl
    p = latent.prior()
    assert isinstance(p, DiagonalNormal)
    torch.testing.assert_close(p.scale, torch.ones(3, dtype=torch.float64), atol=2e-4, rtol=0)
    with torch.no_grad():
        latent.prior_module.loc.copy_(torch.tensor([0.5, -1.0, 2.0]))
    q = latent.posterior(torch.randn(4, latent.raw_size, dtype=torch.float64))
    p = latent.prior()
    m, s, mp_, sp = q.loc, q.scale, p.loc, p.scale
    by_hand = (torch.log(sp / s) + (s**2 + (m - mp_) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    torch.testing.assert_close(latent.kl(q), by_hand)


def test_a_power_spherical_prior_is_estimated_and_the_closed_form_request_is_honoured():
    torch.manual_seed(7)
    latent = VonMisesFisherLatent(2, prior="power_spherical").double()
    assert isinstance(latent.prior(), PowerSpherical) and not latent.closed_form_kl
    with pytest.raises(ValueError, match="^kl=closed_form, but KL\\(VonMisesFisher \\|\\| PowerSpherical\\)"):
        VonMisesFisherLatent(2, prior="power_spherical", kl="closed_form")
    forced = VonMisesFisherLatent(2, prior="vmf", kl="monte_carlo").double()
    assert not forced.closed_form_kl  # asked for by name: estimated although a closed form exists
    q = forced.posterior(torch.randn(1, forced.raw_size, dtype=torch.float64))
    n = 20_000
    draws = forced.kl(q, forced.rsample(q, (n,))).detach()
    exact = kl_divergence(q, forced.prior())
    assert abs(draws.mean() - exact).item() <= 5 * draws.std().item() / n**0.5
    with pytest.raises(ValueError, match="kl must be one of"):
        GaussianLatent(2, kl="exact")



@pytest.mark.parametrize("family, dim", [(VonMisesFisherLatent, 1), (VonMisesFisherLatent, 2), (GaussianLatent, 5)])
def test_the_latent_plot_draws_a_learnt_prior_in_the_means_coordinates(family, dim):
    from hsvae.utils.plotting import plot_latent

    torch.manual_seed(8)
    assert not family(dim).prior_is_learnt
    latent = family(dim, prior="mixture", prior_components=3)
    assert latent.prior_is_learnt
    points = latent.posterior(torch.randn(60, latent.raw_size)).loc
    labels = torch.arange(60) % 3
    fig = plot_latent(points, labels, latent.spherical, "t", prior_samples=latent.prior().sample((200,)))
    ax = fig.axes[0]
    offsets = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    assert sorted(len(o) for o in offsets) == [20, 20, 20, 200] and "learnt prior" in ax.get_title()
    assert all(np.isfinite(np.asarray(o)).all() for o in offsets)
