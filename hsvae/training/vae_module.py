"""Lightning module for the VAE: ELBO training with KL warm-up, and the ELBO's terms on the validation and test
sets (the test stage's other metrics, the log-likelihood and the k-NN accuracies, are evaluators':
:mod:`hsvae.evaluation`, chosen by ``conf/evaluation``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hsvae.models import VAE

from .task import ELBOTask


class VAEModule(ELBOTask):
    """Trains a :class:`~hsvae.models.VAE` on ``(x, y)`` batches (labels are ignored).

    Logged metrics (per data point, in nats): ``{train,val,test}/{elbo,reconstruction,kl}``, ``train/beta``.

    Args:
        net: the VAE.
        optimizer, scheduler, warmup_epochs, final_beta, scheduler_interval: as :class:`ELBOTask` (a
            ``ReduceLROnPlateau`` monitors ``val/elbo``; ``final_beta`` < 1: a beta-VAE).
    """

    def __init__(
        self,
        net: VAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
        scheduler_interval: str = "epoch",
    ):
        super().__init__(net, optimizer, scheduler, warmup_epochs, final_beta, scheduler_interval)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        terms = self.net(x)
        beta = self.beta(batch_idx)
        loss = terms.loss(beta)
        terms = {"loss": loss, "reconstruction": terms.reconstruction.mean(), "kl": terms.kl.mean()}
        self.observe(terms, batch_idx, weight=x.shape[0], beta=beta)
        return loss

    def epoch_metrics(self, means: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | float]:
        return {**means, "elbo": means["reconstruction"] - means["kl"],
                "beta": self.beta(int(self.trainer.num_training_batches))}

    def _evaluate(self, batch, stage: str) -> None:
        x, _ = batch
        terms = self.net(x)
        rec, kl = terms.reconstruction.mean(), terms.kl.mean()
        self.log_dict(
            {f"{stage}/elbo": rec - kl, f"{stage}/reconstruction": rec, f"{stage}/kl": kl},
            prog_bar=stage == "val",
            batch_size=x.shape[0],
            sync_dist=True,
        )
