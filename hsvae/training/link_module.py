"""Lightning module for link prediction with a :class:`~hsvae.models.VGAE`: full-batch training on one graph,
validation AUC/AP every epoch (the model selection's), and the scores of held-out pairs that the ``links``
evaluator turns into the test AUC/AP (at the checkpoint the CLI selects: the best validation epoch)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hsvae.data.links import LinkPredictionDataModule, LinkSplit
from hsvae.evaluation.links import link_metrics
from hsvae.models.vgae import VGAE, encoder_features, gcn_normalized_adjacency

from .task import ELBOTask

#: the metrics that model selection may monitor (all to maximise)
SELECTION_CHOICES = ("val/auc_ap", "val/auc", "val/ap")


class LinkPredictionModule(ELBOTask):
    """Trains a VGAE on the batches of a :class:`~hsvae.data.LinkPredictionDataModule` (one graph per step).

    Logged: ``train/{loss,reconstruction,kl}`` (the KL as the mean per node), ``train/scale`` (the decoder's
    logit scale), ``val/{auc,ap,auc_ap}`` (``auc_ap`` = their mean), and ``best/{val_auc,val_ap,epoch}``:
    the validation metrics at the best epoch by ``selection_metric`` (the ModelCheckpoint's monitor). The test
    metrics ``test/{auc,ap,auc_ap}`` are the ``links`` evaluator's, from :meth:`pair_scores`.

    Validation and test score the posterior *locations* (deterministic, as Kipf's code), with messages passed
    over the training edges only.

    Args:
        net: the VGAE.
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: optional partial LR scheduler constructor; ``ReduceLROnPlateau`` monitors ``selection_metric``.
        selection_metric: one of ``val/auc_ap``, ``val/auc``, ``val/ap``.
    """

    def __init__(
        self,
        net: VGAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        selection_metric: str = "val/auc_ap",
    ):
        if selection_metric not in SELECTION_CHOICES:
            raise ValueError(f"selection_metric must be one of {SELECTION_CHOICES}, got {selection_metric!r}")
        super().__init__(net, optimizer, scheduler)
        self.monitor = selection_metric
        self.best: dict[str, float] = {}
        self._checkpoint_split: dict | None = None  # the edge split a loaded checkpoint was trained on
        self._best_logged = False

    # -- inputs ---------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if datamodule is None:
            return
        if not isinstance(datamodule, LinkPredictionDataModule):
            raise ValueError(
                "model=vgae trains on a graph data module (dataset=cora|citeseer|pubmed); "
                f"got {type(datamodule).__name__}"
            )
        datamodule.setup(stage)

    def inputs(self, graph: LinkSplit) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, normalised training adjacency)``, built once per graph (messages: training edges only)."""
        x = graph.cached("vgae/features", lambda: encoder_features(graph.x))
        adjacency = graph.cached(
            "vgae/adjacency",
            lambda: gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes, graph.x.dtype),
        )
        return x, adjacency

    # -- steps ----------------------------------------------------------------------------------------------
    def training_step(self, graph: LinkSplit, batch_idx: int) -> torch.Tensor:
        terms = self.net(*self.inputs(graph), graph.train_pos, graph.graphs)
        loss = terms.loss()
        # (a stacked network's scale is its members': their mean, as its loss is theirs)
        self.observe({"loss": loss, "reconstruction": terms.reconstruction, "kl": terms.kl.mean()}, batch_idx,
                     extra={"scale": self.net.scale.mean()})
        return loss

    def pair_scores(self, graph: LinkSplit, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, 0/1 labels)`` of the ``stage`` ("val" or "test") pairs, scored at the posterior locations."""
        with self.evaluating() as net:
            z = net.embed(*self.inputs(graph))
            pairs, labels = graph.eval_pairs(stage)
            return net.logits(z, pairs), labels

    def validation_step(self, graph: LinkSplit, batch_idx: int) -> None:
        metrics = link_metrics(*self.pair_scores(graph, "val"))
        self.log_dict({f"val/{k}": v.float() for k, v in metrics.items()}, prog_bar=True, batch_size=1)

    def test_step(self, graph: LinkSplit, batch_idx: int) -> None:
        """Nothing: the test metrics are the evaluators' (``links``: AUC/AP of :meth:`pair_scores`). (Lightning
        runs a test loop only for a module with a test step.)"""

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        metrics = self.trainer.callback_metrics
        score = float(metrics[self.hparams.selection_metric])
        # strict improvement, as ModelCheckpoint decides which epoch it keeps; logged values stay in
        # trainer.callback_metrics until logged again, so only improvements are logged (logging costs time)
        improved = not self.best or score > self.best["score"]
        if improved:
            self.best = {
                "score": score,
                "val_auc": float(metrics["val/auc"]),
                "val_ap": float(metrics["val/ap"]),
                "epoch": float(self.current_epoch),
            }
        if improved or not self._best_logged:  # (after a resume, the restored record is logged once)
            self.log_dict({f"best/{k}": v for k, v in self.best.items() if k != "score"}, batch_size=1)
            self._best_logged = True

    # The best-epoch record survives a resume, and a checkpoint remembers its edge split: tested or resumed on
    # another split (e.g. another seed), its test edges may have been training edges.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["link_prediction_best"] = dict(self.best)
        datamodule = self.trainer.datamodule
        if isinstance(datamodule, LinkPredictionDataModule) and datamodule.graph is not None:
            checkpoint["link_prediction_split"] = {
                "fingerprint": datamodule.graph.fingerprint(),
                "seed": datamodule.seed,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best = dict(checkpoint.get("link_prediction_best", {}))
        self._checkpoint_split = checkpoint.get("link_prediction_split")

    def _check_split(self) -> None:
        expected = self._checkpoint_split
        datamodule = self.trainer.datamodule
        if not expected or not isinstance(datamodule, LinkPredictionDataModule):
            return
        if datamodule.graph.fingerprint() != expected["fingerprint"]:
            raise ValueError(
                f"the checkpoint was trained on another edge split (dataset.seed={expected['seed']}) than this run's "
                f"(dataset.seed={datamodule.seed}): its test edges may have been training edges. Use the training "
                f"run's seed (seed={expected['seed']})."
            )

    def on_train_start(self) -> None:
        self._check_split()
        self._best_logged = False

    def on_test_start(self) -> None:
        self._check_split()

    # -- plots ----------------------------------------------------------------------------------------------
    def latent_points(self, datamodule: LinkPredictionDataModule, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior locations of (up to ``n_points``, a fixed random subset of) the nodes and their classes,
        which training never sees. Used by :class:`~hsvae.training.LatentPlotCallback`."""
        graph = datamodule.graph.to(self.device)
        with self.evaluating() as net:
            points = net.embed(*self.inputs(graph))
        labels = graph.y
        if points.shape[0] > n_points:
            keep = torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(0))[:n_points]
            points, labels = points[keep.to(points.device)], labels[keep.to(labels.device)]
        return points, labels
