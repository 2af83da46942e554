"""A learnt vMF prior for the spherical latents (``latent.prior=vmf``): the KL is the registered closed form to
that prior, gradients reach the prior's parameters (against finite differences), training on the KL alone moves
the prior towards the posteriors, a run trains with it from the command line, and a bad value is refused by key."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence
from torch.nn import functional as F

from hsvae.distributions import HypersphericalUniform, VonMisesFisher
from hsvae.latents import PowerSphericalLatent, SphericalCauchyLatent, VonMisesFisherLatent

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
    assert latent.prior_direction.grad.abs().sum() > 0 and latent.prior_concentration_raw.grad != 0


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
    from hsvae.cli.builders import ConfigError, instantiate_model
    from hsvae.cli.train import train
    from tests.conftest import compose_config

    cfg = compose_config("train", ["latent.prior=vmf", "trainer.max_epochs=2", "dataset.n_train=500", "~logger",
                                   "model.eval_samples=5"], tmp_path / "run")
    metrics = train(cfg)
    assert metrics["test/kl"] > 0 and metrics["test/log_likelihood"] >= metrics["test/elbo"] - 1  # (the IWAE bound)
    bad = compose_config("train", ["latent.prior=gaussian", "data_spec.input_dim=100"], tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"^latent\.prior must be one of \('uniform', 'vmf'\)"):
        instantiate_model(bad)
