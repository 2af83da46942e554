"""The grid log-likelihood (evaluation=[ll_grid]), the independent check of the importance-sampled one: against
log p(x) in closed form for a linear decoder with a Gaussian likelihood, on R^1, R^2, S^1 and S^2."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import special, stats

from hsvae.cli.train import train
from hsvae.evaluation import EvaluationError, GridLogLikelihood, latent_grid
from hsvae.latents import GaussianLatent, VonMisesFisherLatent
from hsvae.models import VAE, GaussianLikelihood, MLPEncoder
from tests.conftest import FAST, compose_config

N_OBS, SIGMA = 5, 0.5


def _linear_vae(latent, weight: torch.Tensor, bias: torch.Tensor) -> VAE:
    decoder = torch.nn.Linear(weight.shape[1], N_OBS, dtype=torch.float64)  # exact weights, not float32 copies
    with torch.no_grad():
        decoder.weight.copy_(weight)
        decoder.bias.copy_(bias)
    return VAE(MLPEncoder(N_OBS, [8]), decoder, latent, GaussianLikelihood(SIGMA)).double()


def _grid_metrics(net: VAE, x: torch.Tensor, **kwargs) -> dict:
    evaluator = GridLogLikelihood(samples=4, **kwargs)
    module = SimpleNamespace(net=net)
    evaluator.test_start(None, module)
    metrics, count = evaluator.test_batch(None, module, (x, None), 0)
    assert count == x.shape[0]
    return metrics


@pytest.mark.parametrize("dim", [1, 2])
def test_on_euclidean_latents_the_grid_is_the_closed_form(dim):
    """z ~ N(0, I), x | z ~ N(W z + b, sigma^2 I): x ~ N(b, W W^T + sigma^2 I)."""
    g = torch.Generator().manual_seed(dim)
    weight, bias = torch.randn(N_OBS, dim, generator=g, dtype=torch.float64), torch.randn(N_OBS, generator=g).double()
    x = torch.randn(7, N_OBS, generator=g, dtype=torch.float64) * 2
    exact = stats.multivariate_normal(bias.numpy(), (weight @ weight.T).numpy() + SIGMA**2 * torch.eye(N_OBS).numpy())
    net = _linear_vae(GaussianLatent(dim), weight, bias)
    grid = _grid_metrics(net, x, step=0.02, radius=8.0)["test/log_likelihood_grid"]
    assert float(grid) == pytest.approx(float(exact.logpdf(x.numpy()).mean()), abs=1e-8)


@pytest.mark.parametrize("dim", [1, 2])
def test_on_spheres_the_grid_is_the_closed_form(dim):
    """W = c Q with orthonormal columns: |W z|^2 = c^2 on the sphere, so p(x) is the uniform average of
    exp(a . z), a = W^T (x - b) / sigma^2: I_0(|a|) on S^1, sinh(|a|) / |a| on S^2."""
    m = dim + 1
    g = torch.Generator().manual_seed(10 + dim)
    q, _ = torch.linalg.qr(torch.randn(N_OBS, m, generator=g, dtype=torch.float64))
    c = 1.5
    weight, bias = c * q, torch.randn(N_OBS, generator=g).double()
    x = torch.randn(7, N_OBS, generator=g, dtype=torch.float64)
    a = ((x - bias) @ weight / SIGMA**2).norm(dim=-1).numpy()
    log_average = a + (np.log(special.i0e(a)) if m == 2 else np.log1p(-np.exp(-2 * a)) - np.log(2 * a))
    log_norm = N_OBS * math.log(SIGMA * math.sqrt(2 * math.pi))
    exact = -((x - bias).pow(2).sum(-1).numpy() + c**2) / (2 * SIGMA**2) - log_norm + log_average
    net = _linear_vae(VonMisesFisherLatent(dim), weight, bias)
    grid = _grid_metrics(net, x, step=0.004)["test/log_likelihood_grid"]
    assert float(grid) == pytest.approx(float(exact.mean()), abs=1e-7)


@pytest.mark.parametrize("event_size, spherical", [(1, False), (2, False), (2, True), (3, True)])
def test_the_grid_cells_fill_the_space(event_size, spherical):
    """The weights add up to the space's volume: (2 radius)^d, the circle's 2 pi, the sphere's 4 pi."""
    _, log_cell = latent_grid(event_size, spherical, step=0.003, radius=3.0)
    total = float(log_cell.exp().sum())
    expected = {(1, False): 6.0, (2, False): 36.0, (2, True): 2 * math.pi, (3, True): 4 * math.pi}
    assert total == pytest.approx(expected[(event_size, spherical)], rel=1e-12)


def test_only_the_first_points_are_integrated_and_the_other_draws_are_untouched():
    net = _linear_vae(GaussianLatent(1), torch.ones(N_OBS, 1, dtype=torch.float64), torch.zeros(N_OBS).double())
    evaluator, module = GridLogLikelihood(points=10, samples=3), SimpleNamespace(net=net)
    evaluator.test_start(None, module)
    x = torch.randn(6, N_OBS, dtype=torch.float64)
    state = torch.get_rng_state()
    assert evaluator.test_batch(None, module, (x, None), 0)[1] == 6
    assert torch.equal(torch.get_rng_state(), state)  # its importance draws came from a forked state
    assert evaluator.test_batch(None, module, (x, None), 1)[1] == 4
    assert evaluator.test_batch(None, module, (x, None), 2) is None


def test_a_latent_a_grid_cannot_cover_is_refused_in_one_line_naming_the_key():
    net = _linear_vae(GaussianLatent(3), torch.ones(N_OBS, 3, dtype=torch.float64), torch.zeros(N_OBS).double())
    with pytest.raises(EvaluationError, match=r"^evaluation.ll_grid \(GridLogLikelihood\) needs .*latent.dim <= 2.*"
                                              r"drop ll_grid from evaluation=\[...\]$"):
        GridLogLikelihood().check("ll_grid", SimpleNamespace(), SimpleNamespace(net=net))
    with pytest.raises(ValueError, match="evaluation.ll_grid: step and radius must be > 0"):
        GridLogLikelihood(step=0)


def test_a_run_with_ll_grid_logs_the_integral_beside_the_estimate(tmp_path):
    grid = ["evaluation=[ll_grid]", "evaluation.ll_grid.step=0.5", "evaluation.ll_grid.points=20",
            "evaluation.ll_grid.samples=50"]
    cfg = compose_config("train", ["latent=gaussian", "latent.dim=2", "dataset.n_train=640", "trainer.max_epochs=1",
                                   *grid, *FAST], tmp_path / "run")
    metrics = train(cfg)
    grid, sampled = metrics["test/log_likelihood_grid"], metrics["test/log_likelihood_grid_is"]
    assert math.isfinite(grid) and math.isfinite(sampled)
