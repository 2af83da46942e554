"""How well a latent keeps the geometry of a known circle (the synthetic sphere's true angles): the rank
correlation of pairwise distances, and a tear measure (true neighbours far apart in the latent).

On the synthetic data the k-NN accuracy is about 0.99 for every model (the three clusters nearly tile the
circle), so it cannot show the paper's point; these measure the closed loop itself.

Dimension convention: latent points are ``(N, m)``; on a sphere (``spherical``) they are unit vectors and their
distance is the angle between them, in R^m the Euclidean distance.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .evaluator import Evaluator, Metrics, latent_means
from .protocols import Embeds, KnownAngles


def circle_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The geodesic distance on the unit circle between angles ``a`` and ``b`` (radians, in [0, pi])."""
    d = torch.remainder(a - b, 2 * math.pi)
    return torch.minimum(d, 2 * math.pi - d)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x).scatter_(0, x.argsort(), torch.arange(x.numel(), dtype=x.dtype, device=x.device))


def spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of two 1-d samples (continuous values: ties are not treated)."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return (rx * ry).sum() / (rx.norm() * ry.norm())


def _latent_distance(a: torch.Tensor, b: torch.Tensor, spherical: bool) -> torch.Tensor:
    """Row-wise distance: the angle between unit vectors when ``spherical``, else Euclidean."""
    if spherical:
        return torch.acos((a * b).sum(-1).clamp(-1.0, 1.0))
    return (a - b).norm(dim=-1)


def geodesic_rank_correlation(points: torch.Tensor, angles: torch.Tensor, spherical: bool, pairs: int = 20000,
                              seed: int = 0) -> torch.Tensor:
    """Spearman's correlation between the true geodesic distances of ``pairs`` random pairs of points on the
    circle (``angles``) and their latent distances (the angle between unit vectors when ``spherical``, else
    Euclidean). 1: the latent orders every distance as the circle does."""
    n = points.shape[0]
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(n, (pairs,), generator=g), torch.randint(n, (pairs,), generator=g)
    keep = i != j
    i, j = i[keep].to(points.device), j[keep].to(points.device)
    latent = _latent_distance(points[i], points[j], spherical)
    return spearman(circle_distance(angles[i], angles[j]).to(latent), latent)


def tear_ratio(points: torch.Tensor, angles: torch.Tensor, spherical: bool) -> torch.Tensor:
    """Neighbours on the true circle, far apart in the latent: with the points in the order of their true angles
    (circularly), the largest latent distance between consecutive points divided by the median one. About 1-10
    for a closed loop (the sample's own gaps); a tear, where the latent opens the loop, puts two true neighbours
    at the ends of an open curve and the ratio far above."""
    order = angles.argsort()
    ordered = points[order.to(points.device)]
    step = _latent_distance(ordered, ordered.roll(-1, dims=0), spherical)
    return step.max() / step.median().clamp_min(torch.finfo(step.dtype).tiny)


class CircleGeometry(Evaluator):
    """With data generated on a circle whose angles are known (the synthetic sphere): how the test points' latent
    means keep it: ``test/geodesic_spearman`` (:func:`geodesic_rank_correlation`) and ``test/tear_ratio``
    (:func:`tear_ratio`); distances on the sphere for a latent of one sphere, else Euclidean."""

    data_needs = (KnownAngles,)
    model_needs = (Embeds,)
    needs_text = "data generated on a circle with known angles (dataset=synthetic) and a VAE's latent means"

    def test_end(self, trainer: Any, module: Any) -> Metrics:
        points = latent_means(module, self.data.splits["test"].x)
        truth = self.data.angles["test"].to(points.device)
        spherical = len(module.net.latent.spheres) == 1
        return {"test/geodesic_spearman": geodesic_rank_correlation(points, truth, spherical).float(),
                "test/tear_ratio": tear_ratio(points, truth, spherical).float()}
