"""A deterministic latent: the plain autoencoder baseline of the S-VAE paper's synthetic experiment.

The "posterior" is a point mass at the encoder's output, the KL term is zero, and there is no
likelihood bound to report (the importance-sampled log-likelihood is undefined: the ``ll`` evaluator logs
nothing for it).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from .base import LatentFamily, PosteriorSample


class PointMass(Distribution):
    """A point mass at ``loc`` (``event_shape == loc.shape[-1:]``); ``rsample`` returns ``loc`` itself."""

    arg_constraints = {"loc": constraints.real_vector}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, validate_args: bool | None = None):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        return self.loc.expand(self._extended_shape(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc


class DeterministicLatent(LatentFamily):
    """z = encoder output in R^d; no prior term (a regular autoencoder)."""

    has_prior = False

    def __init__(self, dim: int):
        super().__init__(dim)

    @property
    def event_size(self) -> int:
        return self.dim

    @property
    def raw_size(self) -> int:
        return self.dim

    def posterior(self, raw: torch.Tensor) -> PointMass:
        return PointMass(raw)

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        raise NotImplementedError("a deterministic autoencoder has no prior: it cannot be sampled from")

    def kl(self, q: Distribution, sample: PosteriorSample | None = None) -> torch.Tensor:
        return torch.zeros(q.batch_shape, dtype=q.loc.dtype, device=q.loc.device)
