"""Lightning module for the VAE: ELBO training with KL warm-up, validation/test metrics,
and the importance-sampled test log-likelihood."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hsvae.models import VAE
from hsvae.utils.progress import PhaseProgress

from .task import ELBOTask

#: importance samples of the test log-likelihood under ``trainer.fast_dev_run`` (at most)
FAST_DEV_RUN_EVAL_SAMPLES = 10


class VAEModule(ELBOTask):
    """Trains a :class:`~hsvae.models.VAE` on ``(x, y)`` batches (labels are ignored).

    Logged metrics (per data point, in nats): ``{train,val,test}/{elbo,reconstruction,kl}``,
    ``train/beta``, ``test/log_likelihood`` (importance-sampled, ``eval_samples`` samples).

    Args:
        net: the VAE.
        optimizer: a partial ``torch.optim`` constructor (``optimizer(params=...)``).
        scheduler: optional partial LR scheduler constructor; ``ReduceLROnPlateau`` monitors ``val/elbo``.
        warmup_epochs: the KL weight beta rises linearly from 0 to 1 over this many epochs (0: no warm-up).
        final_beta: the KL weight after warm-up (1 for the ELBO; < 1 for a beta-VAE).
        eval_samples: importance samples for the test log-likelihood (0 disables it). Its progress, with an ETA,
            is shown below the Testing bar on a terminal (see :mod:`hsvae.utils.progress`).
        knn_k: if > 0, ``test/knn_accuracy``: a k-NN classifier on the latent means of (up to
            ``knn_train_points``) training points, evaluated on the test points' means (Euclidean distance in
            R^d, cosine on the sphere). Needs a data module with labelled ``splits``.
        m1_labels: the S-VAE paper's M1 evaluation: for each n here (e.g. ``[100, 600, 1000]``),
            ``test/m1_knn_<n>`` is the accuracy on the test set of an ``m1_k``-NN classifier whose reference set
            is a class-balanced subset of n training points (drawn with ``m1_seed``), on the latent means
            (see :mod:`hsvae.evaluation.semisupervised`). The counts are checked against the data (divisible by
            its classes, within the training set) before training starts. Empty: off.
        m1_k: neighbours of the M1 classifier (at most the smallest labelled set).
        m1_seed: seed of the labelled subsets; None: the data module's seed (the run's seed).
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
        m1_labels: Sequence[int] = (),
        m1_k: int = 5,
        m1_seed: int | None = None,
    ):
        if not isinstance(eval_samples, int) or eval_samples < 0:
            raise ValueError(
                f"eval_samples (importance samples of the test log-likelihood) must be an integer >= 1, "
                f"or 0 to skip it; got {eval_samples!r}"
            )
        m1_labels = list(m1_labels or ())
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in m1_labels):
            raise ValueError(f"m1_labels must be positive integers (labelled-set sizes), got {m1_labels!r}")
        if isinstance(m1_k, bool) or not isinstance(m1_k, int) or m1_k < 1:
            raise ValueError(f"m1_k (neighbours of the M1 k-NN) must be a positive integer, got {m1_k!r}")
        if m1_labels and m1_k > min(m1_labels):
            raise ValueError(
                f"m1_k={m1_k} neighbours exceeds the smallest labelled set of m1_labels={m1_labels}"
            )
        super().__init__(net, optimizer, scheduler, warmup_epochs, final_beta)
        self.hparams.m1_labels = m1_labels
        self._ll_progress: PhaseProgress | None = None

    def setup(self, stage: str) -> None:
        # Check the M1 label counts against the data now rather than after a long training.
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        if self.hparams.m1_labels and splits and "train" in splits:
            from hsvae.evaluation.semisupervised import balanced_subset

            for n in self.hparams.m1_labels:
                balanced_subset(splits["train"].y, n, seed=self._m1_seed(),
                                num_classes=getattr(datamodule, "num_classes", None))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Latent means of ``x`` (on the CPU or the device), in eval mode, 1000 points at a time."""
        with self.evaluating() as net:
            return torch.cat([net.embed(b.to(self.device)) for b in x.split(1000)])

    def _log_circle_geometry(self, points: torch.Tensor, angles: torch.Tensor) -> None:
        """With data generated on a circle (the synthetic sphere, whose ``angles`` are known): how the test points'
        latent means keep it: ``test/geodesic_spearman`` (rank correlation of pairwise distances) and
        ``test/tear_ratio`` (the largest latent step between neighbours on the circle over the median step)."""
        from hsvae.evaluation.geometry import geodesic_rank_correlation, tear_ratio

        truth = angles.to(points.device)
        spherical = len(self.net.latent.spheres) == 1
        metrics = {"test/geodesic_spearman": geodesic_rank_correlation(points, truth, spherical),
                   "test/tear_ratio": tear_ratio(points, truth, spherical)}
        self.log_dict({k: v.float() for k, v in metrics.items()}, sync_dist=True)

    def _m1_seed(self) -> int:
        if self.hparams.get("m1_seed") is not None:
            return self.hparams.m1_seed
        return getattr(getattr(self.trainer, "datamodule", None), "seed", 0)

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

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def _eval_samples(self) -> int:
        samples = self.hparams.eval_samples
        if self.trainer.fast_dev_run:
            # a smoke test: 500 samples x 1000 images through a conv decoder would take minutes on a CPU
            samples = min(samples, FAST_DEV_RUN_EVAL_SAMPLES)
        return samples

    def on_test_epoch_start(self) -> None:
        self._close_ll_progress()
        if self.hparams.eval_samples > 0 and self.net.latent.has_prior:
            batches = sum(self.trainer.num_test_batches)
            self._ll_progress = PhaseProgress(
                f"log-likelihood ({self._eval_samples()} samples)",
                total=batches if batches != float("inf") else None, trainer=self.trainer, unit="batch",
            )

    def _close_ll_progress(self) -> None:
        if self._ll_progress is not None:
            self._ll_progress.close()
            self._ll_progress = None

    def on_test_end(self) -> None:
        self._close_ll_progress()

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
        if self.hparams.eval_samples > 0 and self.net.latent.has_prior:
            x, _ = batch
            samples = self._eval_samples()
            on_chunk = None
            progress = self._ll_progress
            if progress is not None and progress.shown:
                # the bar moves by fractions of a batch; on a GPU it waits for the chunk, so that it (and its ETA)
                # follows the computation rather than the kernel queue. Only while a bar is displayed.
                def on_chunk(s: int) -> None:
                    if x.is_cuda:
                        torch.cuda.synchronize(x.device)
                    progress.advance(s / samples)

            ll = self.net.log_likelihood(x, samples, on_chunk=on_chunk).mean()
            if progress is not None:
                progress.update(float(batch_idx + 1))
            self.log("test/log_likelihood", ll, batch_size=x.shape[0], sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self._close_ll_progress()
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        angles = getattr(datamodule, "angles", None) or {}
        m1_labels = self.hparams.get("m1_labels") or []
        if not splits or (self.hparams.knn_k <= 0 and not m1_labels and "test" not in angles):
            return
        test = (self._embed(splits["test"].x), splits["test"].y.to(self.device))  # once, for every measure below
        if "test" in angles:
            self._log_circle_geometry(test[0], angles["test"])
        if self.hparams.knn_k <= 0 and not m1_labels:
            return
        from hsvae.evaluation import knn_accuracy
        from hsvae.evaluation.semisupervised import m1_knn_accuracies

        metric = "cosine" if self.net.latent.spheres else "euclidean"
        if self.hparams.knn_k > 0:
            limit = self.hparams.knn_train_points
            train = (self._embed(splits["train"].x[:limit]), splits["train"].y[:limit].to(self.device))
            accuracy = knn_accuracy(*train, *test, k=self.hparams.knn_k, metric=metric)
            self.log("test/knn_accuracy", accuracy, sync_dist=True)
        if m1_labels:
            prepare = None
            if getattr(datamodule, "binarize", None) == "dynamic":
                # Training images are stored as grey levels and binarised afresh for every batch; the labelled
                # ones are binarised once (seeded), as the test images are, so both sides see binary inputs.
                def prepare(x: torch.Tensor) -> torch.Tensor:
                    generator = torch.Generator().manual_seed(self._m1_seed())
                    return torch.bernoulli(x.cpu(), generator=generator)

            accuracies = m1_knn_accuracies(
                self._embed, splits["train"].x, splits["train"].y, *test, m1_labels, k=self.hparams.m1_k, metric=metric,
                seed=self._m1_seed(), num_classes=getattr(datamodule, "num_classes", None), prepare=prepare,
            )
            self.log_dict({f"test/m1_knn_{n}": acc for n, acc in accuracies.items()}, sync_dist=True)
