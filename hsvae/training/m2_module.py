"""Lightning module for M1+M2 (Kingma et al. 2014): semi-supervised training of an :class:`~hsvae.models.M2`
on M1 latent codes, with its classifier q(y | z1) evaluated on the validation and test sets."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from hsvae.data.m1_codes import M1CodesDataModule
from hsvae.models.m2 import M2

from .task import ELBOTask


class M2Module(ELBOTask):
    """Trains an M2 on batches ``(z1_unlabelled, z1_labelled, y_labelled)`` of a
    :class:`~hsvae.data.m1_codes.M1CodesDataModule`; validation and test batches are ``(z1, y)``.

    The objective is Kingma et al.'s J^alpha = sum_labelled L + sum_unlabelled U + alpha N E_labelled[log q(y|z1)]
    (eq. 9, with their alpha = 0.1 N), divided by the number of training points N = N_l + N_u. Each step
    estimates it from a labelled and an unlabelled batch:

        loss = -(w L_labelled + (1 - w) U_unlabelled) - alpha log q(y | z1)_labelled   (batch means),

    with w = ``labelled_weight``, by default N_l / N as in the sum (Kingma et al.'s code weights the
    classifier's log-likelihood by alpha N / N_l per labelled point, which is the same thing).

    Logged (per data point, nats): ``train/{loss,labelled_bound,unlabelled_bound,classification}``,
    ``train/accuracy`` (labelled batches), ``{val,test}/elbo`` (the unlabelled bound U, which uses no labels)
    and ``{val,test}/accuracy`` (of q(y | z1)'s most probable class).

    Args:
        net: the M2.
        optimizer, scheduler: as :class:`ELBOTask` (a ``ReduceLROnPlateau`` monitors ``val/accuracy``).
        alpha: weight of the classifier's log-likelihood on labelled codes, per point (0.1 in Kingma et al.).
        labelled_weight: w above, in [0, 1]; null: N_l / N from the data module.
        warmup_epochs: the weight of z2's KL term in the training objective rises linearly from 0 to 1 over
            this many epochs (0: none, Kingma et al.'s objective throughout). The logged bounds are always the
            unweighted ones.
    """

    monitor = "val/accuracy"
    nonfinite_hint = "Lower the learning rate, or check the M1 codes."

    def __init__(
        self,
        net: M2,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        alpha: float = 0.1,
        labelled_weight: float | None = None,
        warmup_epochs: float = 0.0,
    ):
        if not alpha >= 0:
            raise ValueError(f"alpha (weight of the classification term) must be >= 0, got {alpha}")
        if labelled_weight is not None and not 0.0 <= labelled_weight <= 1.0:
            raise ValueError(f"labelled_weight must lie in [0, 1] (or be null: N_l / N), got {labelled_weight}")
        super().__init__(net, optimizer, scheduler, warmup_epochs)
        self._labelled_weight = labelled_weight

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if not isinstance(datamodule, M1CodesDataModule):
            raise ValueError(f"model=m2 trains on M1 codes (dataset=mnist_m1); got {type(datamodule).__name__}")
        if datamodule.num_classes != self.net.num_classes:
            raise ValueError(
                f"model.net.num_classes={self.net.num_classes}, but the data has {datamodule.num_classes} classes"
            )
        size = datamodule.input_shape
        if tuple(size) != (self.net.z1_size,):
            raise ValueError(
                f"the M2 expects z1 codes of size {self.net.z1_size} (model.net.z1_latent), but the data module's "
                f"M1 gives codes of shape {tuple(size)}: m1.latent and the M1 checkpoint disagree"
            )
        if self._labelled_weight is None and stage == "fit":
            n_l, n_u = datamodule.n_labelled, datamodule.n_unlabelled
            self._labelled_weight = n_l / (n_l + n_u)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        z_u, z_l, y_l = batch
        w = self._labelled_weight  # set in setup("fit") when not given
        beta = self.beta(batch_idx)
        labelled, labelled_surrogate = self.net.labelled_bound(z_l, y_l, beta)
        unlabelled, unlabelled_surrogate = self.net.unlabelled_bound(z_u, kl_weight=beta)
        logits = self.net.classify(z_l)
        classification = F.cross_entropy(logits, y_l)
        loss = -(w * labelled_surrogate.mean() + (1 - w) * unlabelled_surrogate.mean()) \
            + self.hparams.alpha * classification
        accuracy = (logits.argmax(-1) == y_l).float().mean()
        self.observe({"loss": loss, "labelled_bound": labelled.mean(), "unlabelled_bound": unlabelled.mean(),
                      "classification": classification}, batch_idx, extra={"accuracy": accuracy}, beta=beta)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        z1, y = batch
        logits = self.net.classify(z1)
        bound, _ = self.net.unlabelled_bound(z1, logits)
        self.log_dict(
            {f"{stage}/elbo": bound.mean(), f"{stage}/accuracy": (logits.argmax(-1) == y).float().mean()},
            prog_bar=stage == "val", batch_size=z1.shape[0], sync_dist=True,
        )

    def latent_points(self, datamodule, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For the latent plot: z2 locations of validation codes given their predicted class, and true labels."""
        split = datamodule.splits["val"]
        z1, y = split.x[:n_points].to(self.device), split.y[:n_points]
        with self.evaluating() as net:
            predicted = F.one_hot(net.classify(z1).argmax(-1), net.num_classes).to(z1.dtype)
            return net.latent.point(net.posterior(z1, predicted)), y
