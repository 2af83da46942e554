"""``test/log_likelihood``: the importance-sampled log-likelihood of the test points (the S-VAE paper's
measure), computed batch by batch right after each test step."""

from __future__ import annotations

from typing import Any

import torch

from hsvae.utils.progress import PhaseProgress

from .evaluator import Evaluator, Metrics
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
