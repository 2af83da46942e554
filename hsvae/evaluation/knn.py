"""k-nearest-neighbour classification on latent embeddings.

Euclidean distance for latents in R^d; on the sphere, the geodesic distance arccos(x.y), whose
neighbour order is that of the cosine similarity, so the cosine is used (cheaper, same neighbours).
"""

from __future__ import annotations

from typing import Any

import torch

from .evaluator import Evaluator, Metrics, latent_distance, latent_means
from .protocols import Embeds, LabelledSplits

METRICS = ("euclidean", "cosine")


def knn_predict(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    query_x: torch.Tensor,
    k: int = 5,
    metric: str = "euclidean",
    chunk: int = 2048,
) -> torch.Tensor:
    """Majority vote of the k nearest training points (ties: the smallest label), per query row."""
    if metric not in METRICS:
        raise ValueError(f"knn metric must be one of {METRICS}, got {metric!r}")
    if not 1 <= k <= train_x.shape[0]:
        raise ValueError(f"k must lie in [1, {train_x.shape[0]}] (the number of labelled points), got k={k}")
    n_classes = int(train_y.max()) + 1
    preds = []
    ref = torch.nn.functional.normalize(train_x, dim=-1) if metric == "cosine" else train_x
    for start in range(0, query_x.shape[0], chunk):
        q = query_x[start : start + chunk]
        # larger = nearer
        score = torch.nn.functional.normalize(q, dim=-1) @ ref.T if metric == "cosine" else -torch.cdist(q, ref)
        idx = score.topk(k, dim=1).indices
        votes = torch.nn.functional.one_hot(train_y[idx], n_classes).sum(1)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_x, train_y, query_x, query_y, k: int = 5, metric: str = "euclidean") -> float:
    return (knn_predict(train_x, train_y, query_x, k, metric) == query_y).float().mean().item()


class KNNAccuracy(Evaluator):
    """``test/knn_accuracy``: a k-NN classifier on the latent means of (up to ``train_points``) training points,
    evaluated on the test points' means (Euclidean distance in R^d, cosine on the sphere).

    Args:
        k: neighbours.
        train_points: the first this many training points are the reference set.
    """

    data_needs = (LabelledSplits,)
    model_needs = (Embeds,)
    needs_text = "labelled splits (dataset=synthetic|mnist) and a VAE's latent means"

    def __init__(self, k: int = 5, train_points: int = 10000):
        for name, value in (("k", k), ("train_points", train_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.k, self.train_points = k, train_points

    def test_end(self, trainer: Any, module: Any) -> Metrics:
        train, test = self.data.splits["train"], self.data.splits["test"]
        limit = self.train_points
        accuracy = knn_accuracy(latent_means(module, train.x[:limit]), train.y[:limit].to(module.device),
                                latent_means(module, test.x), test.y.to(module.device), k=self.k,
                                metric=latent_distance(module.net))
        return {"test/knn_accuracy": accuracy}
