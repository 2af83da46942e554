"""The variational auto-encoder as a plain ``nn.Module``: encoder -> latent family -> decoder -> likelihood.

It knows nothing of Lightning or Hydra; the training loop calls :meth:`VAE.forward` for the ELBO
terms and :meth:`VAE.log_likelihood` for the importance-sampled marginal likelihood. The observation models
p(x | z) (:class:`Likelihood`) take the decoder's output ``params`` (as many elements as x per row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.latents import LatentFamily, PosteriorSample


class Likelihood(nn.Module):
    """log p(x | params) summed over each data point's elements, shape ``params.shape[:-1]``."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x_i | params_j) for every pair: ``x`` ``(B, ...)``, ``params`` ``(G, n)`` -> ``(B, G)``."""
        return self.log_prob(x, params[:, None, :].expand(-1, x.shape[0], -1)).T


class BernoulliLikelihood(Likelihood):
    """Bernoulli on each pixel, ``params`` are logits; x in [0, 1] (binary, or grey levels as in BCE)."""

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).expand_as(params) if params.dim() > 2 else x.reshape(params.shape)
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # -BCE(l, x) = x l - softplus(l) for any x in [0, 1]: one matrix product for all pairs
        return x.reshape(x.shape[0], -1) @ params.T - F.softplus(params).sum(-1)


class GaussianLikelihood(Likelihood):
    """Isotropic Gaussian N(x; params, sigma^2 I) with a fixed ``sigma``."""

    def __init__(self, sigma: float = 1.0):
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"GaussianLikelihood: sigma must be > 0, got {sigma}")
        self.sigma = sigma

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1).expand_as(params) if params.dim() > 2 else x.reshape(params.shape)
        n = params.shape[-1]
        sq = ((x - params) / self.sigma).pow(2).sum(-1)
        return -0.5 * sq - n * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def log_prob_table(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        sq = x.pow(2).sum(-1, keepdim=True) - 2 * x @ params.T + params.pow(2).sum(-1)
        return -0.5 * sq / self.sigma**2 - params.shape[-1] * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))


@dataclass
class ELBOTerms:
    """Per-data-point terms of one ELBO evaluation (shapes ``(B,)``)."""

    reconstruction: torch.Tensor  #: log p(x | z), z ~ q(z | x)
    kl: torch.Tensor  #: KL(q(z | x) || p(z))
    sample: PosteriorSample  #: the draw z and its latent's gradient estimator
    posterior: Distribution

    @property
    def z(self) -> torch.Tensor:
        return self.sample.z

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Mean negative (beta-weighted) ELBO, with the latent's gradient estimator (the same value)."""
        return -(self.sample.surrogate(self.reconstruction) - beta * self.kl).mean()

    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl


class VAE(nn.Module):
    """x -> encoder features -> latent posterior -> sample -> decoder -> p(x | z).

    Args:
        encoder: module mapping a batch ``(B, ...)`` to features ``(B, encoder.out_features)``.
        decoder: a callable ``decoder(in_features=...)`` building the decoder for the latent's sample size
            (e.g. a ``functools.partial`` of :class:`~hsvae.models.mlp.MLPDecoder`), or a built module.
        latent: the latent family (Gaussian, vMF, spherical Cauchy, Power Spherical, ...).
        likelihood: the observation model.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Callable[..., nn.Module] | nn.Module,
        latent: LatentFamily,
        likelihood: Likelihood,
    ):
        super().__init__()
        self.encoder = encoder
        self.latent = latent
        self.head = nn.Linear(encoder.out_features, latent.raw_size)
        self.decoder = decoder if isinstance(decoder, nn.Module) else decoder(in_features=latent.event_size)
        self.likelihood = likelihood

    def posterior_params(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's raw output for x, ``(B, latent.raw_size)``: ``latent.posterior`` of it is q(z | x)."""
        return self.head(self.encoder(x))

    def posterior(self, x: torch.Tensor) -> Distribution:
        return self.latent.posterior(self.posterior_params(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Point embedding of x (the posterior's location): for plots, k-NN and interpolation."""
        return self.latent.point(self.posterior(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for latent samples ``z`` of shape ``(..., event_size)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> ELBOTerms:
        q = self.posterior(x)
        sample = self.latent.rsample(q)
        reconstruction = self.likelihood.log_prob(x, self.decoder(sample.z))
        return ELBOTerms(reconstruction, self.latent.kl(q, sample), sample, q)

    @torch.no_grad()
    def log_likelihood(
        self, x: torch.Tensor, n_samples: int = 500, chunk: int = 100, on_chunk: Callable[[int], None] | None = None
    ) -> torch.Tensor:
        """Importance-sampled log p(x) with the posterior as proposal, per data point (shape ``(B,)``).

        log p(x) ~= logsumexp_s [log p(x|z_s) + log p(z_s) - log q(z_s|x)] - log S,  z_s ~ q(z|x).
        A lower bound in expectation that tightens as S grows; S = 500 as in the S-VAE paper.
        Samples are drawn ``chunk`` at a time to bound memory; ``on_chunk(s)``, if given, is called after each
        chunk with its number of samples s (for a progress bar).
        """
        if n_samples < 1:
            raise ValueError(f"n_samples (importance samples) must be >= 1, got {n_samples}")
        q = self.posterior(x)
        p = self.latent.prior(x)
        weights = []
        for start in range(0, n_samples, chunk):
            s = min(chunk, n_samples - start)
            z = q.sample((s,))  # (s, B, event_size)
            log_px_z = self.likelihood.log_prob(x, self.decoder(z))
            weights.append(log_px_z + p.log_prob(z) - q.log_prob(z))
            if on_chunk is not None:
                on_chunk(s)
        return torch.logsumexp(torch.cat(weights, 0), dim=0) - math.log(n_samples)
