"""k-nearest-neighbour classification of latent means: ``test/knn_accuracy`` (:class:`KNNAccuracy`) and the S-VAE
paper's M1 evaluation (:class:`M1Accuracy`), the k-NN with few labels.

Euclidean distance for latents in R^d; on the sphere, the geodesic distance arccos(x.y), whose
neighbour order is that of the cosine similarity, so the cosine is used (cheaper, same neighbours).

M1: a class-balanced labelled subset of n training points (n / C per class, C classes, drawn with a seed)
is embedded and serves as the k-NN's reference set; the test points are classified by it. The subset is
drawn from the *training* split only, so it is disjoint from the test set by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from hsvae.utils.errors import EvaluationError

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


def balanced_subset(
    labels: torch.Tensor, n_labels: int, seed: int = 0, num_classes: int | None = None
) -> torch.Tensor:
    """Indices into ``labels`` of ``n_labels`` points, ``n_labels / num_classes`` from every class.

    Within each class the points are a uniform draw without replacement (seeded by ``seed``); the returned
    indices are sorted, so the subset does not depend on the order the classes are visited in.

    Args:
        labels: integer class labels in ``[0, num_classes)``, shape ``(N,)``.
        n_labels: the size of the subset; a positive multiple of ``num_classes``, at most N.
        seed: seed of the draw (the same seed and labels give the same subset).
        num_classes: C; defaults to ``labels.max() + 1``.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-d tensor of class indices, got shape {tuple(labels.shape)}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1:
        raise ValueError(f"n_labels (the number of labelled points) must be a positive integer, got {n_labels!r}")
    if n_labels > labels.numel():
        raise ValueError(
            f"n_labels={n_labels} labelled points requested, but the training set has only {labels.numel()} points"
        )
    if n_labels % num_classes:
        raise ValueError(
            f"n_labels={n_labels} is not divisible by the {num_classes} classes: a balanced subset needs "
            f"a multiple of {num_classes} (e.g. {(n_labels // num_classes) * num_classes or num_classes})"
        )
    per_class = n_labels // num_classes
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in range(num_classes):
        members = (labels == c).nonzero().squeeze(1)
        if members.numel() < per_class:
            raise ValueError(
                f"n_labels={n_labels} needs {per_class} points of each of the {num_classes} classes, but class {c} "
                f"has only {members.numel()} in the training set"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
def m1_knn_accuracies(
    embed: Callable[[torch.Tensor], torch.Tensor],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_embeddings: torch.Tensor,
    test_y: torch.Tensor,
    label_counts: Sequence[int],
    k: int = 5,
    metric: str = "euclidean",
    seed: int = 0,
    num_classes: int | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[int, float]:
    """M1 accuracy for each labelled-set size: ``{n: accuracy of the k-NN on n balanced training labels}``.

    Only the labelled points are embedded (``embed`` maps a batch of inputs to latent means), so a large
    training set costs nothing beyond drawing the subset. Every size draws its own subset with ``seed``.

    Args:
        embed: inputs ``(B, ...)`` -> latent means ``(B, event_size)`` (on the inputs' device).
        train_x, train_y: the training split the labelled points come from.
        test_embeddings, test_y: latent means and labels of the test points.
        label_counts: labelled-set sizes, e.g. ``(100, 600, 1000)``.
        k: neighbours; must not exceed the smallest labelled set.
        metric: ``"euclidean"`` (R^d) or ``"cosine"`` (the sphere).
        seed, num_classes: of the labelled subsets (see :func:`balanced_subset`).
        prepare: applied to the labelled inputs (all of one subset at once) before ``embed``, e.g. a seeded
            binarisation of grey-level images.
    """
    counts = list(label_counts)
    if counts and k > min(counts):
        raise ValueError(
            f"k={k} neighbours exceeds the smallest labelled set ({min(counts)} points, from label counts {counts})"
        )
    out = {}
    for n in counts:
        idx = balanced_subset(train_y, n, seed=seed, num_classes=num_classes).to(train_y.device)
        labelled = train_x[idx] if prepare is None else prepare(train_x[idx])
        reference = torch.cat([embed(b) for b in labelled.split(1000)])
        out[n] = knn_accuracy(reference, train_y[idx].to(reference.device), test_embeddings,
                              test_y.to(test_embeddings.device), k=k, metric=metric)
    return out


class M1Accuracy(Evaluator):
    """The S-VAE paper's M1 evaluation: for each n of ``labels`` (e.g. ``[100, 600, 1000]``), ``test/m1_knn_<n>``
    is the test accuracy of a ``k``-NN whose reference set is a class-balanced subset of n training points (drawn
    with ``seed``), on the latent means (:func:`m1_knn_accuracies`). The counts are checked against the data
    (divisible by its classes, within the training set) before training starts.

    Where the data draws its inputs afresh for every batch (MNIST's dynamic binarisation), the labelled inputs are
    drawn once, with the seed (the data's ``fixed_inputs``), as the test inputs are.

    Args:
        labels: the labelled-set sizes.
        k: neighbours (at most the smallest labelled set).
        seed: seed of the labelled subsets; None: the data module's seed (the run's).
    """

    data_needs = (LabelledSplits,)
    model_needs = (Embeds,)
    needs_text = "labelled splits (dataset=mnist|synthetic) and a VAE's latent means"

    def __init__(self, labels: Sequence[int] = (100, 600, 1000), k: int = 5, seed: int | None = None):
        labels = list(labels or ())
        if not labels or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in labels):
            raise ValueError(f"labels must be a non-empty list of positive integers (labelled-set sizes), got "
                             f"{labels!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (neighbours of the M1 k-NN) must be a positive integer, got {k!r}")
        if k > min(labels):
            raise ValueError(f"k={k} neighbours exceeds the smallest labelled set of labels={labels}")
        self.labels, self.k, self.seed = labels, k, seed

    def _seed(self) -> int:
        return self.data.seed if self.seed is None else self.seed

    def setup(self, datamodule: LabelledSplits) -> None:
        super().setup(datamodule)
        labels = datamodule.splits["train"].y
        for n in self.labels:  # before a long training rather than after it
            try:
                balanced_subset(labels, n, seed=self._seed(), num_classes=datamodule.num_classes)
            except ValueError as err:
                raise EvaluationError(f"evaluation.m1.labels={self.labels}: {err}") from None

    def test_end(self, trainer: Any, module: Any) -> Metrics:
        train, test = self.data.splits["train"], self.data.splits["test"]
        seed = self._seed()
        accuracies = m1_knn_accuracies(
            lambda x: latent_means(module, x), train.x, train.y, latent_means(module, test.x),
            test.y.to(module.device), self.labels, k=self.k, metric=latent_distance(module.net), seed=seed,
            num_classes=self.data.num_classes, prepare=lambda x: self.data.fixed_inputs(x, seed),
        )
        return {f"test/m1_knn_{n}": accuracy for n, accuracy in accuracies.items()}
