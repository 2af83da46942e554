"""Link prediction's measures: the ROC AUC and the average precision of scored node pairs against 0/1 labels (as
sklearn computes them, in torch), and ``test/{auc,ap,auc_ap}`` of a graph's held-out test pairs (:class:`LinkAUCAP`).
The validation metrics that select a VGAE's checkpoint are the same functions (:func:`link_metrics`)."""

from __future__ import annotations

from typing import Any

import torch

from .evaluator import Evaluator, Metrics
from .protocols import LinkGraph, ScoresPairs


def _check_binary(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    if scores.dim() != 1 or scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must be 1-d of the same length, got {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    y = labels.bool()
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need positive and negative examples, got {n_pos} and {n_neg}")
    return scores.detach().double(), y, n_pos, n_neg


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve (Mann-Whitney statistic; tied scores count one half), as sklearn's
    ``roc_auc_score``. Scores may be logits: only their order matters."""
    s, y, n_pos, n_neg = _check_binary(scores, labels)
    order = s.argsort()
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2  # 1-based mean rank of each group of ties
    ranks = torch.empty_like(s)
    ranks[order] = average_rank[inverse]
    return (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision sum_k (R_k - R_(k-1)) P_k over the distinct thresholds, as sklearn's
    ``average_precision_score``. Scores may be logits: only their order matters."""
    s, y, n_pos, _ = _check_binary(scores, labels)
    order = s.argsort(descending=True, stable=True)
    s_sorted, y_sorted = s[order], y[order].double()
    tp = y_sorted.cumsum(0)
    # one threshold per distinct score: the last position of each run of ties
    last = torch.ones_like(s_sorted, dtype=torch.bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    tp = tp[last]
    predicted = (torch.nonzero(last).squeeze(-1) + 1).double()
    precision, recall = tp / predicted, tp / n_pos
    return (torch.diff(recall, prepend=recall.new_zeros(1)) * precision).sum()


@torch.no_grad()
def link_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"auc", "ap", "auc_ap"}`` of pair scores against 0/1 labels (float64 scalars; ``auc_ap``: their mean)."""
    auc, ap = roc_auc(logits, labels), average_precision(logits, labels)
    return {"auc": auc, "ap": ap, "auc_ap": (auc + ap) / 2}


class LinkAUCAP(Evaluator):
    """``test/auc``, ``test/ap`` and ``test/auc_ap`` (their mean) of the graph's held-out test edges against as many
    non-edges, scored by the module (the VGAE: at the posterior locations, messages over the training edges)."""

    data_needs = (LinkGraph,)
    module_needs = (ScoresPairs,)
    needs_text = "a graph with held-out test edges (dataset=cora|citeseer|pubmed) and a link scorer (model=vgae)"

    def test_batch(self, trainer: Any, module: ScoresPairs, batch: Any, batch_idx: int) -> tuple[Metrics, int]:
        return {f"test/{k}": v.float() for k, v in link_metrics(*module.pair_scores(batch, "test")).items()}, 1
