"""Training a stack of link-prediction runs (hsvae.models.stacked_vgae): K VGAEs, one per seed, as one fit.

Each member keeps its own data module (its edge split, drawn with its seed); a step's batch is the list of the
members' graphs (:class:`~hsvae.training.stacked.StackedDataModule`). Validation scores every member on its own
validation pairs, as :class:`~hsvae.training.LinkPredictionModule` scores a separate run, and
:class:`~hsvae.training.stacked.MemberSelection` keeps each member's best epoch by the selection metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hsvae.data.links import LinkSplit
from hsvae.models.stacked_vgae import StackedVGAE, block_diagonal_adjacency
from hsvae.evaluation.links import link_metrics
from hsvae.models.vgae import encoder_features

from .link_module import SELECTION_CHOICES
from .stacked import MemberSelection, StackedTask


class StackedLinkPredictionModule(StackedTask):
    """Trains a :class:`~hsvae.models.stacked_vgae.StackedVGAE` on the list of its members' graphs.

    ``member_metrics`` holds every member's ``val/auc``, ``val/ap`` and ``val/auc_ap`` of this validation epoch
    (``(K,)`` each), read by :class:`~hsvae.training.stacked.MemberSelection`; the members' means are logged.

    Args:
        net: the stacked VGAE.
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: the run's partial LR scheduler constructor, one per member (see StackedTask).
        selection_metric: one of ``val/auc_ap``, ``val/auc``, ``val/ap`` (each member's best epoch by it).
    """

    def __init__(self, net: StackedVGAE, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable | None = None, selection_metric: str = "val/auc_ap"):
        if selection_metric not in SELECTION_CHOICES:
            raise ValueError(f"selection_metric must be one of {SELECTION_CHOICES}, got {selection_metric!r}")
        super().__init__(net, optimizer, scheduler)
        self.monitor = selection_metric
        self._inputs: tuple[list[LinkSplit], torch.Tensor, torch.Tensor] | None = None

    def inputs(self, graphs: Sequence[LinkSplit]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(the shared features, the members' block-diagonal normalised training adjacency)``, built once for
        the members' graphs (the graphs are held, so that the check is by identity)."""
        held = self._inputs
        if held is None or len(held[0]) != len(graphs) or any(a is not b for a, b in zip(held[0], graphs)):
            first = graphs[0]
            for i, graph in enumerate(graphs[1:], start=1):
                if graph.num_nodes != first.num_nodes or not torch.equal(graph.x, first.x):
                    raise ValueError(f"the stack's members train on different graphs (member {i}'s node features "
                                     f"differ from member 0's): a stack's members differ only in their seed")
            adjacency = block_diagonal_adjacency([g.message_passing_edges() for g in graphs], first.num_nodes,
                                                 first.x.dtype)
            self._inputs = held = (list(graphs), encoder_features(first.x), adjacency)
        return held[1], held[2]

    def training_step(self, graphs: list[LinkSplit], batch_idx: int) -> torch.Tensor:
        terms = self.net(*self.inputs(graphs), [g.train_pos for g in graphs])
        losses = torch.stack([t.loss() for t in terms])
        reconstruction = torch.stack([t.reconstruction for t in terms])
        kl = torch.stack([t.kl.mean() for t in terms])
        scale = self.net.scale.detach()
        loss = losses.sum()
        self.observe({"loss": loss, "reconstruction": reconstruction.mean(), "kl": kl.mean()}, batch_idx,
                     extra={"scale": scale.mean(), "member/loss": losses, "member/reconstruction": reconstruction,
                            "member/kl": kl, "member/scale": scale})
        return loss

    def validation_step(self, graphs: list[LinkSplit], batch_idx: int) -> None:
        with self.evaluating() as net:
            z = net.embed(*self.inputs(graphs))
            members = [link_metrics(net.logits(i, z[i], pairs), labels)
                       for i, (pairs, labels) in enumerate(g.eval_pairs("val") for g in graphs)]
        auc = torch.stack([m["auc"] for m in members]).float()
        ap = torch.stack([m["ap"] for m in members]).float()
        self.member_metrics = {"val/auc": auc, "val/ap": ap, "val/auc_ap": (auc + ap) / 2}
        self.log_dict({k: v.mean() for k, v in self.member_metrics.items()}, prog_bar=True, batch_size=1)

    def member_results(self, i: int, selection: MemberSelection) -> dict[str, float]:
        """Member i's fit metrics as its separate run reports them: the last validation metrics, the best
        epoch's record (``best/val_auc``, ``best/val_ap``, ``best/epoch``) and the checkpoint callback's best."""
        results = {name: float(values[i]) for name, values in self.member_metrics.items()}
        best = selection.best_metrics[i]
        nan = float("nan")
        results.update({"best/val_auc": best.get("val/auc", nan), "best/val_ap": best.get("val/ap", nan),
                        "best/epoch": float(selection.best_epochs[i]),
                        f"best/{self.monitor.replace('/', '_')}": selection.best_scores[i]})
        return results
