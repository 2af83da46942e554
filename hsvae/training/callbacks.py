"""Callbacks that draw what a researcher looks at: the latent space, reconstructions, samples and interpolations.

Figures go to ``<output_dir>/plots/`` and, when the logger can show images (W&B, TensorBoard), to the
logger too. Everything runs on global rank zero only, so DDP runs write each picture once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from hsvae.evaluation.interpolation import decode_interpolations
from hsvae.evaluation.protocols import LabelledSplits
from hsvae.utils.modules import evaluating
from hsvae.latents.base import latent_space
from hsvae.utils.plotting import image_grid, image_rows, plot_latent, save_figure


def log_figure(trainer: pl.Trainer, key: str, fig, step: int) -> None:
    """Send a matplotlib figure to every logger that displays images."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({key: wandb.Image(fig), "trainer/global_step": step})
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, fig, global_step=step, close=False)


@dataclass
class FigureContext:
    """What a :class:`FigureCallback` reads of its trainer, for drawing outside a fit."""

    datamodule: pl.LightningDataModule
    loggers: list
    global_step: int


@runtime_checkable
class ChoosesLatentPoints(Protocol):
    """A LightningModule that picks the points of its latent plot itself (the link-prediction module: every node
    of the graph; the M2: its z2 given the predicted class)."""

    def latent_points(self, datamodule: pl.LightningDataModule, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(points (N, event_size), labels (N,))``."""


class FigureCallback(pl.Callback):
    """A callback that draws figures of the model at the end of the fit (``final``) and every ``every_n_epochs``
    validation epochs, with :meth:`draw`; the trainer it reads (``datamodule``, ``loggers``, ``global_step``) may
    be a :class:`FigureContext` outside a fit (a stack's members, drawn after theirs)."""

    def __init__(self, output_dir: str, every_n_epochs: int = 0, n_points: int = 2000):
        self.output_dir = Path(output_dir) / "plots"
        self.every_n_epochs = every_n_epochs
        self.n_points = n_points

    def _batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule):
        """Validation points ``(x, y)`` of a data module with labelled splits, or None (e.g. a graph data module)."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, LabelledSplits) or "val" not in datamodule.splits:
            return None
        split = datamodule.splits["val"]
        x, y = split.x[: self.n_points], split.y[: self.n_points]
        return x.to(pl_module.device), y

    def draw(self, trainer: pl.Trainer | FigureContext, pl_module: pl.LightningModule, tag: str) -> None:
        """Draw this callback's figures into ``<output_dir>/plots/<name>_<tag>.png`` and the image loggers."""
        raise NotImplementedError

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.every_n_epochs <= 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer, pl_module, f"epoch{trainer.current_epoch + 1:04d}")

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        self.draw(trainer, pl_module, "final")


class LatentPlotCallback(FigureCallback):
    """Scatter of the validation points' latent means, coloured by class (on the sphere for spherical latents),
    over samples of the prior when it is learnt (``latent.prior``).

    A LightningModule with a ``latent_points(datamodule, n_points) -> (points, labels)`` method chooses its own
    points (the link-prediction module: every node of the graph); otherwise the data module's validation split
    is embedded with ``pl_module.net.embed``.
    """

    @torch.no_grad()
    def draw(self, trainer, pl_module, tag):
        net = pl_module.net
        if isinstance(pl_module, ChoosesLatentPoints):
            points, y = pl_module.latent_points(trainer.datamodule, self.n_points)
        else:
            batch = self._batch(trainer, pl_module)
            if batch is None:
                return
            x, y = batch
            with evaluating(net):
                points = net.embed(x)
        latent = net.latent
        family = type(latent).__name__.replace("Latent", "")
        space = latent_space(latent.spheres, latent.dim)
        prior_samples = latent.prior(points).sample((len(points),)) if latent.prior_is_learnt else None
        fig = plot_latent(points, y, latent.spherical, title=f"latent means: {family}, {space}",
                          prior_samples=prior_samples)
        log_figure(trainer, "latent", fig, trainer.global_step)
        save_figure(fig, self.output_dir / f"latent_{tag}.png")


class ImageSamplesCallback(FigureCallback):
    """Reconstructions of validation images (originals above, reconstructions below, each row group labelled)
    and prior samples."""

    def __init__(self, output_dir: str, every_n_epochs: int = 0, n_images: int = 32):
        super().__init__(output_dir, every_n_epochs, n_images)

    @torch.no_grad()
    def draw(self, trainer, pl_module, tag):
        net = pl_module.net
        batch = self._batch(trainer, pl_module)
        if batch is None or batch[0].dim() != 4:  # not an image dataset
            return
        x, _ = batch
        with evaluating(net):
            reconstructions = net.likelihood.mean(net.decode(net.embed(x))).reshape(x.shape)
            figures = {"reconstructions": image_rows([("validation\nimages", x), ("reconstructions", reconstructions)],
                                                     nrow=16, title="reconstructions (from the latent means)")}
            if net.latent.has_prior:
                z = net.latent.prior().sample((x.shape[0],))
                figures["samples"] = image_grid(net.likelihood.mean(net.decode(z)).reshape(x.shape), nrow=16,
                                                title="samples from the prior")
        for key, fig in figures.items():
            log_figure(trainer, key, fig, trainer.global_step)
            save_figure(fig, self.output_dir / f"{key}_{tag}.png")


class InterpolationCallback(FigureCallback):
    """Decoded latent paths between pairs of validation images (slerp on the sphere, a line in R^d), in
    ``interpolation_<tag>.png``; image data only (for vector data or graphs it draws nothing). Rows: pairs of
    validation images (images 2i and 2i + 1 of the validation split); columns: ``steps`` evenly spaced points on
    the path between their latent means, decoded to the likelihood's mean."""

    def __init__(self, output_dir: str, every_n_epochs: int = 0, n_pairs: int = 8, steps: int = 10):
        if not isinstance(n_pairs, int) or n_pairs < 1:
            raise ValueError(f"callbacks.interpolation.n_pairs must be a positive integer, got {n_pairs!r}")
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"callbacks.interpolation.steps must be an integer >= 2, got {steps!r}")
        super().__init__(output_dir, every_n_epochs, 2 * n_pairs)
        self.steps = steps

    @torch.no_grad()
    def draw(self, trainer, pl_module, tag):
        batch = self._batch(trainer, pl_module)
        if batch is None or batch[0].dim() != 4 or batch[0].shape[0] < 2:  # not an image dataset
            return
        x = batch[0]
        pairs = x.shape[0] // 2
        images = decode_interpolations(pl_module.net, x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2], self.steps)
        latent = pl_module.net.latent
        kind = "slerp" if latent.spheres else "straight line"
        name = f"{type(latent).__name__.replace('Latent', '')}, d={latent.dim}"
        fig = image_grid(images.flatten(0, 1), nrow=self.steps, title=f"interpolation ({kind}; {name})")
        log_figure(trainer, "interpolation", fig, trainer.global_step)
        save_figure(fig, self.output_dir / f"interpolation_{tag}.png")
