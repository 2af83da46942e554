"""The latent-family interface: raw network outputs -> posterior, prior and KL.

A model never constructs distributions itself. Its encoder produces ``raw_size`` numbers per
data point; the latent family turns them into a posterior distribution (choosing the
parameterisation: softplus for concentrations, normalisation for directions, ...), provides the
matching prior, and computes the KL between them. Swapping Gaussian for vMF is then a config change.

Dimension convention: ``dim`` is the *intrinsic* dimension d of the latent space. Gaussian
latents live in R^d (``event_size == d``); spherical latents live on the sphere S^d embedded in
R^(d+1) (``event_size == d + 1``), as in the S-VAE and spherical-Cauchy authors' code.
"""

from __future__ import annotations

import abc

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence


def latent_space(spherical: bool, dim: int) -> str:
    """The space of a d-dimensional latent in words: ``"S^d in R^(d+1)"`` on the sphere, else ``"R^d"``."""
    return f"S^{dim} in R^{dim + 1}" if spherical else f"R^{dim}"


class LatentFamily(nn.Module, abc.ABC):
    """Base class of the latent families.

    Args:
        dim: intrinsic latent dimension d >= 1.
    """

    #: True for the families on the sphere (their samples and means are unit vectors).
    spherical: bool = False
    #: False for a deterministic autoencoder: no prior to sample or to importance-weight against.
    has_prior: bool = True

    def __init__(self, dim: int):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"latent.dim must be an integer >= 1 (the intrinsic latent dimension d), got {dim!r}")
        self.dim = dim
        self._kl_is_closed_form: bool | None = None

    @property
    @abc.abstractmethod
    def event_size(self) -> int:
        """Length of a latent sample's last axis (d for R^d, d + 1 for S^d)."""

    @property
    @abc.abstractmethod
    def raw_size(self) -> int:
        """How many unconstrained numbers per data point the encoder must produce."""

    @abc.abstractmethod
    def posterior(self, raw: torch.Tensor) -> Distribution:
        """The posterior q(z | x) from raw encoder outputs of shape ``(..., raw_size)``."""

    @abc.abstractmethod
    def prior(self, like: torch.Tensor) -> Distribution:
        """The prior p(z), on ``like``'s device and dtype, with batch shape ``()``."""

    def kl(self, q: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q || p) per data point (shape ``q.batch_shape``).

        Uses the closed form registered with ``torch.distributions.kl.register_kl`` when there is one,
        otherwise the single-sample Monte-Carlo estimate log q(z) - log p(z) at the posterior sample ``z``
        (which must then be given).
        """
        p = self.prior(q.mean if z is None else z)
        if self._kl_is_closed_form is not False:
            try:
                out = kl_divergence(q, p)
                self._kl_is_closed_form = True
                return out
            except NotImplementedError:
                self._kl_is_closed_form = False
        if z is None:
            raise ValueError(f"{type(self).__name__}: no closed-form KL is registered; pass the posterior sample z")
        return q.log_prob(z) - p.log_prob(z)

    def point(self, q: Distribution) -> torch.Tensor:
        """A point summary of the posterior for embeddings, k-NN and plots: its location parameter."""
        return q.loc

    def extra_repr(self) -> str:
        return f"dim={self.dim}, event_size={self.event_size}"
