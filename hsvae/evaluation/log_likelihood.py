"""The test points' log-likelihood. ``test/log_likelihood``: importance-sampled (the S-VAE paper's measure),
computed batch by batch right after each test step (:class:`LogLikelihood`). ``test/log_likelihood_grid``: log p(x)
by numerical integration over a latent space of dimension <= 2, beside the importance-sampled estimate on the same
points (:class:`GridLogLikelihood`): an independent check of ``test/log_likelihood`` (its normalisation, and how far
500 posterior draws are from the integral) where a grid can cover the latent.

p(x) = integral of p(x|z) p(z) dz as a weighted sum over a grid: midpoints on [-radius, radius]^d for R^1 and R^2
and in the circle's angle for S^1; on S^2 Gauss-Legendre nodes in cos(theta) times midpoints in the azimuth. Every
point's integral shares the grid's decoder outputs, so the cost is one decoder pass over the grid per test batch
plus a (points x grid) product. With a step at most the posterior's width (its standard deviation, or
1/sqrt(kappa) on a sphere) these rules on smooth integrands are exact to far below 0.01 nat; halving the step and
seeing the number stay is the check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hsvae.utils.progress import PhaseProgress

from .evaluator import EvaluationError, Evaluator, Metrics
from .protocols import ImportanceSampled

#: importance samples under ``trainer.fast_dev_run`` (at most): a smoke test, where 500 samples x 1000 images
#: through a conv decoder would take minutes on a CPU
FAST_DEV_RUN_SAMPLES = 10


class LogLikelihood(Evaluator):
    """log p(x) ~= logsumexp_s [log p(x|z_s) + log p(z_s) - log q(z_s|x)] - log S per test point, averaged.

    Its draws follow each test step's own (the ELBO's), batch by batch, as they always did: the same seed gives
    the same number. A latent without a prior (the plain autoencoder) has no likelihood: nothing is logged. The
    progress, with an ETA, is shown below the Testing bar on a terminal (see :mod:`hsvae.utils.progress`).

    Args:
        samples: importance samples S per point (500 in the S-VAE paper).
    """

    model_needs = (ImportanceSampled,)
    needs_text = "a VAE with a log-likelihood (model=mlp_vae|conv_vae)"

    def __init__(self, samples: int = 500):
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples (importance samples of the test log-likelihood) must be an integer >= 1, "
                             f"got {samples!r}; drop ll from evaluation=[...] to skip it")
        self.samples = samples
        self._progress: PhaseProgress | None = None

    def _samples(self, trainer: Any) -> int:
        return min(self.samples, FAST_DEV_RUN_SAMPLES) if trainer.fast_dev_run else self.samples

    def test_start(self, trainer: Any, module: Any) -> None:
        self.teardown()
        if module.net.latent.has_prior:
            batches = sum(trainer.num_test_batches)
            self._progress = PhaseProgress(f"log-likelihood ({self._samples(trainer)} samples)",
                                           total=batches if batches != float("inf") else None, trainer=trainer,
                                           unit="batch")

    def test_batch(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> tuple[Metrics, int] | None:
        if not module.net.latent.has_prior:
            return None
        x, _ = batch
        samples = self._samples(trainer)
        on_chunk = None
        progress = self._progress
        if progress is not None and progress.shown:
            # the bar moves by fractions of a batch; on a GPU it waits for the chunk, so that it (and its ETA)
            # follows the computation rather than the kernel queue. Only while a bar is displayed.
            def on_chunk(s: int) -> None:
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)
                progress.advance(s / samples)

        ll = module.net.log_likelihood(x, samples, on_chunk=on_chunk).mean()
        if progress is not None:
            progress.update(float(batch_idx + 1))
        return {"test/log_likelihood": ll}, x.shape[0]

    def teardown(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None


def latent_grid(event_size: int, spherical: bool, step: float, radius: float,
                device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A quadrature rule's nodes ``(G, event_size)`` and their log weights ``(G,)`` (Lebesgue on R^d, the surface
    measure on a sphere: the measure the latent's densities are taken against)."""

    def midpoints(low: float, high: float) -> torch.Tensor:
        n = max(1, math.ceil((high - low) / step))
        h = (high - low) / n
        return low + h * (torch.arange(n, dtype=torch.float64, device=device) + 0.5)

    if not spherical:
        axis = midpoints(-radius, radius)
        h = float(axis[1] - axis[0]) if axis.numel() > 1 else 2 * radius
        z = torch.cartesian_prod(*[axis] * event_size).reshape(-1, event_size)
        return z, torch.full((z.shape[0],), event_size * math.log(h), dtype=z.dtype, device=device)
    phi = midpoints(0.0, 2 * math.pi)
    h_phi = 2 * math.pi / phi.numel()
    if event_size == 2:
        z = torch.stack([phi.cos(), phi.sin()], -1)
        return z, torch.full((z.shape[0],), math.log(h_phi), dtype=z.dtype, device=device)
    # S^2: the area element is du dphi in u = cos(theta); Gauss-Legendre nodes in u (as many as the polar angle's
    # steps) keep the rule spectral where midpoints in theta would leave an O(step^2) error at the poles
    u, w = (torch.from_numpy(a).to(device) for a in np.polynomial.legendre.leggauss(math.ceil(math.pi / step)))
    u, p = (g.reshape(-1) for g in torch.meshgrid(u, phi, indexing="ij"))
    r = (1 - u * u).clamp_min(0).sqrt()
    z = torch.stack([r * p.cos(), r * p.sin(), u], -1)
    return z, torch.log(w * h_phi).repeat_interleave(phi.numel())


class GridLogLikelihood(Evaluator):
    """On the first ``points`` test points: ``test/log_likelihood_grid`` (the integral over a grid) and
    ``test/log_likelihood_grid_is`` (the importance-sampled estimate with ``samples`` draws, as
    ``test/log_likelihood`` computes it). A latent of one Gaussian block of dimension 1 or 2, or one sphere S^1 or
    S^2. Its importance draws come from a forked random state: the other evaluators' draws are as without it.

    Args:
        step: grid spacing (latent units on R^d, radians on a sphere).
        radius: half-width of the grid on R^d (the prior N(0, I) leaves below e^-18 of its mass outside 6).
        points: how many test points (the first ones, in the test order; None: all).
        samples: importance samples of the estimate it is compared with.
        chunk: grid points decoded at a time (memory: chunk x the decoder's output size).
    """

    model_needs = (ImportanceSampled,)
    needs_text = "a VAE whose latent is one Gaussian or one sphere of dimension 1 or 2 (latent.dim <= 2)"

    def __init__(self, step: float = 0.02, radius: float = 6.0, points: int | None = 1000, samples: int = 500,
                 chunk: int = 8192):
        if not step > 0 or not radius > 0 or (points is not None and points < 1) or samples < 1 or chunk < 1:
            raise ValueError(f"evaluation.ll_grid: step and radius must be > 0, points (or null), samples and chunk "
                             f">= 1; got step={step}, radius={radius}, points={points}, samples={samples}, "
                             f"chunk={chunk}")
        self.step, self.radius, self.points, self.samples, self.chunk = step, radius, points, samples, chunk
        self._seen = 0
        self._grid: tuple[torch.Tensor, torch.Tensor] | None = None

    def check(self, name: str, datamodule: Any, module: Any) -> None:
        super().check(name, datamodule, module)
        latent = module.net.latent
        spheres = tuple(latent.spheres)
        flat_ok = not spheres and latent.event_size <= 2
        sphere_ok = spheres == (latent.event_size,) and latent.event_size in (2, 3)
        if not (flat_ok or sphere_ok):
            raise EvaluationError(f"evaluation.{name} ({type(self).__name__}) needs {self.needs_text}; this latent "
                                  f"has event size {latent.event_size} (spheres {spheres}): drop {name} from "
                                  f"evaluation=[...]")

    def test_start(self, trainer: Any, module: Any) -> None:
        self._seen = 0
        # the nodes and their log weights (quadrature weight times prior density) are every test batch's: built once
        latent = module.net.latent
        z, log_cell = latent_grid(latent.event_size, bool(latent.spheres), self.step, self.radius,
                                  device=next(module.net.parameters()).device)
        self._grid = (z, log_cell + latent.prior(z).log_prob(z).double()) if latent.has_prior else None

    @torch.no_grad()
    def test_batch(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> tuple[Metrics, int] | None:
        net = module.net
        x = batch[0]
        if self.points is not None:
            x = x[: max(0, self.points - self._seen)]
        if x.shape[0] == 0 or not net.latent.has_prior:
            return None
        self._seen += x.shape[0]
        z, log_weight = self._grid
        flat_x = x.reshape(x.shape[0], -1)
        parts = []
        for zc, wc in zip(z.split(self.chunk), log_weight.split(self.chunk)):
            table = net.likelihood.log_prob_table(flat_x, net.decode(zc.to(flat_x.dtype)))  # (B, chunk)
            parts.append(torch.logsumexp(table.double() + wc, dim=-1))
        grid = torch.logsumexp(torch.stack(parts, -1), dim=-1)
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            sampled = net.log_likelihood(x, self.samples)
        return {"test/log_likelihood_grid": grid.mean().to(x.dtype),
                "test/log_likelihood_grid_is": sampled.mean()}, x.shape[0]
