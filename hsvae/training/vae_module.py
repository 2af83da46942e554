"""Lightning module for the VAE: ELBO training with KL warm-up, validation/test metrics,
and the importance-sampled test log-likelihood."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch

from hsvae.models import VAE

from .errors import NonFiniteLossError


class VAEModule(pl.LightningModule):
    """Trains a :class:`~hsvae.models.VAE` on ``(x, y)`` batches (labels are ignored).

    Logged metrics (per data point, in nats): ``{train,val,test}/{elbo,reconstruction,kl}``,
    ``train/beta``, ``test/log_likelihood`` (importance-sampled, ``eval_samples`` samples).

    Args:
        net: the VAE.
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: optional partial LR scheduler constructor; ``ReduceLROnPlateau`` monitors ``val/elbo``.
        warmup_epochs: the KL weight beta rises linearly from 0 to 1 over this many epochs (0: no warm-up).
        final_beta: the KL weight after warm-up (1 for the ELBO; < 1 for a beta-VAE).
        eval_samples: importance samples for the test log-likelihood (0 disables it).
        knn_k: if > 0, ``test/knn_accuracy``: a k-NN classifier on the latent means of (up to
            ``knn_train_points``) training points, evaluated on the test points' means (Euclidean distance in
            R^d, cosine on the sphere). Needs a data module with labelled ``splits``.
    """

    def __init__(
        self,
        net: VAE,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable | None = None,
        warmup_epochs: float = 0.0,
        final_beta: float = 1.0,
        eval_samples: int = 500,
        knn_k: int = 0,
        knn_train_points: int = 10000,
    ):
        super().__init__()
        if warmup_epochs < 0:
            raise ValueError(f"module.warmup_epochs must be >= 0, got {warmup_epochs}")
        if final_beta < 0:
            raise ValueError(f"module.final_beta must be >= 0, got {final_beta}")
        if not isinstance(eval_samples, int) or eval_samples < 0:
            raise ValueError(
                f"module.eval_samples (importance samples of the test log-likelihood) must be an integer >= 1, "
                f"or 0 to skip it; got {eval_samples!r}"
            )
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self._train_sums: torch.Tensor | None = None
        self._train_count = 0

    # -- the KL schedule ------------------------------------------------------------------------
    def beta(self, batch_idx: int = 0) -> float:
        final = self.hparams.final_beta
        if self.hparams.warmup_epochs <= 0:
            return final
        batches = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
        progress = (self.current_epoch + batch_idx / batches) / self.hparams.warmup_epochs
        return final * min(1.0, progress)

    # -- steps ----------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        terms = self.net(x)
        beta = self.beta(batch_idx)
        loss = terms.loss(beta)
        rec, kl = terms.reconstruction.mean(), terms.kl.mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}): "
                f"loss={loss.item():.6g}, reconstruction={rec.item():.6g}, kl={kl.item():.6g}, beta={beta:.4g}. "
                "Training stopped; checkpoints written so far are kept. Lower the learning rate, or check the data "
                "and the latent's parameter bounds."
            )
        # Per-step self.log calls cost more than a small MLP's step on CPU; accumulate and log per epoch.
        stats = torch.stack([loss.detach(), rec.detach(), kl.detach()]) * x.shape[0]
        self._train_sums = stats if self._train_sums is None else self._train_sums + stats
        self._train_count += x.shape[0]
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_count = None, 0

    def on_train_epoch_end(self) -> None:
        if self._train_sums is None:
            return
        loss, rec, kl = (self._train_sums / self._train_count).unbind()
        self.log_dict(
            {"train/loss": loss, "train/elbo": rec - kl, "train/reconstruction": rec, "train/kl": kl,
             "train/beta": self.beta(int(self.trainer.num_training_batches))},
            sync_dist=True,
        )

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

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
        if self.hparams.eval_samples > 0 and self.net.latent.has_prior:
            x, _ = batch
            ll = self.net.log_likelihood(x, self.hparams.eval_samples).mean()
            self.log("test/log_likelihood", ll, batch_size=x.shape[0], sync_dist=True)

    @torch.no_grad()
    def on_test_epoch_end(self) -> None:
        splits = getattr(getattr(self.trainer, "datamodule", None), "splits", None)
        if self.hparams.knn_k <= 0 or not splits:
            return
        from hsvae.evaluation import knn_accuracy

        embed = {}
        for name, limit in (("train", self.hparams.knn_train_points), ("test", None)):
            x, y = splits[name].x[:limit], splits[name].y[:limit]
            embed[name] = (torch.cat([self.net.embed(b.to(self.device)) for b in x.split(1000)]), y.to(self.device))
        metric = "cosine" if self.net.latent.spherical else "euclidean"
        accuracy = knn_accuracy(*embed["train"], *embed["test"], k=self.hparams.knn_k, metric=metric)
        self.log("test/knn_accuracy", accuracy, sync_dist=True)

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/elbo"}}
