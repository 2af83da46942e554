"""k-nearest-neighbour classification on latent embeddings.

Euclidean distance for latents in R^d; on the sphere, the geodesic distance arccos(x.y), whose
neighbour order is that of the cosine similarity, so the cosine is used (cheaper, same neighbours).
"""

from __future__ import annotations

import torch

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
        if metric == "cosine":
            score = torch.nn.functional.normalize(q, dim=-1) @ ref.T  # larger = nearer
        else:
            score = -torch.cdist(q, ref)
        idx = score.topk(k, dim=1).indices
        votes = torch.nn.functional.one_hot(train_y[idx], n_classes).sum(1)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_x, train_y, query_x, query_y, k: int = 5, metric: str = "euclidean") -> float:
    return (knn_predict(train_x, train_y, query_x, k, metric) == query_y).float().mean().item()
