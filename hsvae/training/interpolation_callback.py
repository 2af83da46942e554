"""A figure of decoded latent paths between pairs of validation images (slerp on the sphere, a line in R^d).

Written to ``<output_dir>/plots/interpolation_<tag>.png`` at the end of training (and every
``every_n_epochs`` epochs if set), and sent to W&B / TensorBoard when one of them is a logger. Image data
sets only: for vector data or graphs the callback does nothing.
"""

from __future__ import annotations

import torch

from hsvae.evaluation.interpolation import decode_interpolations
from hsvae.utils.plotting import image_grid, save_figure

from .callbacks import FigureCallback, log_figure


class InterpolationCallback(FigureCallback):
    """Rows: pairs of validation images (images 2i and 2i + 1 of the validation split); columns: ``steps``
    evenly spaced points on the path between their latent means, decoded to the likelihood's mean."""

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
