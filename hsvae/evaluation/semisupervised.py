"""The S-VAE paper's M1 evaluation: k-NN classification of latent means with few labels.

A class-balanced labelled subset of n training points (n / C per class, C classes, drawn with a seed)
is embedded and serves as the k-NN's reference set; the test points are classified by it. Euclidean
distance for latents in R^d, cosine (the geodesic order) on the sphere: see :mod:`hsvae.evaluation.knn`.

The subset is drawn from the *training* split only, so it is disjoint from the test set by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .knn import knn_accuracy


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
