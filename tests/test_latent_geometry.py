"""The latent-geometry measures of the synthetic sphere (hsvae.evaluation.geometry): Spearman against scipy,
perfect embeddings of the circle score 1, a torn one (the circle cut open onto a line) has a large tear ratio,
and a run on the synthetic data logs both."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from hsvae.evaluation.geometry import circle_distance, geodesic_rank_correlation, spearman, tear_ratio


def test_spearman_matches_scipy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, generator=g)
    y = x + 0.7 * torch.randn(500, generator=g)
    assert spearman(x, y).item() == pytest.approx(scipy.stats.spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)


def test_circle_distance_wraps():
    a = torch.tensor([0.1, 0.1, 3.0])
    b = torch.tensor([2 * math.pi - 0.1, 0.4, -3.0])
    torch.testing.assert_close(circle_distance(a, b), torch.tensor([0.2, 0.3, 2 * math.pi - 6.0]))


def _angles(n=800):
    return torch.rand(n, generator=torch.Generator().manual_seed(1)) * 2 * math.pi


def test_a_faithful_circle_scores_one_and_has_no_tear():
    angles = _angles()
    circle = torch.stack([angles.cos(), angles.sin()], -1)
    assert geodesic_rank_correlation(circle, angles, spherical=True).item() == pytest.approx(1.0, abs=1e-9)
    # the chord is a monotone function of the arc: Euclidean distances rank the same
    assert geodesic_rank_correlation(3 * circle + 1, angles, spherical=False).item() == pytest.approx(1.0, abs=1e-9)
    assert tear_ratio(circle, angles, spherical=True).item() < 15  # 800 uniform points: max/median spacing ~ 10


def test_a_torn_circle_has_a_large_tear_and_a_lower_correlation():
    angles = _angles()
    line = torch.stack([angles, torch.zeros_like(angles)], -1)  # cut open at angle 0 and unrolled
    assert tear_ratio(line, angles, spherical=False).item() > 500  # the two ends were neighbours
    assert geodesic_rank_correlation(line, angles, spherical=False).item() < 0.8


def test_the_synthetic_run_logs_the_geometry(tmp_path):
    from tests.conftest import compose_config
    from hsvae.cli.train import train

    cfg = compose_config("train", ["trainer.max_epochs=2", "dataset.n_train=500", "~logger", "evaluation.ll.samples=2"],
                         tmp_path / "run")
    metrics = train(cfg)
    assert -1.0 <= metrics["test/geodesic_spearman"] <= 1.0 and metrics["test/tear_ratio"] >= 1.0
