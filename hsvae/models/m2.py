"""The M2 model of Kingma et al. (2014), stacked on the latent codes z1 of an M1 VAE (M1+M2).

Generative model: p(y) = Cat(1/C), p(z2) = the prior of the M2 latent family, p(z1 | y, z2) a likelihood on
the space of z1. Inference model: q(y | z1) = Cat(softmax(classifier(z1))), the classifier of the
semi-supervised task, and q(z2 | z1, y) from the M2 latent family (Gaussian or spherical: any
:class:`~hsvae.latents.LatentFamily`).

Bounds, per data point (Kingma et al. 2014, eqs. 6-7):

* labelled:   L(z1, y) = E_q(z2|z1,y)[log p(z1 | y, z2)] + log p(y) - KL(q(z2 | z1, y) || p(z2));
* unlabelled: U(z1) = sum_y q(y | z1) L(z1, y) + H(q(y | z1)), with the sum over the C classes computed
  exactly (every point is run through the encoder and decoder once per class).

The likelihood p(z1 | y, z2) follows the geometry of z1:

* z1 in R^d (Gaussian or deterministic M1): a diagonal Gaussian N(mu, diag sigma^2) with mean and scale from
  the decoder (sigma = softplus + ``z1_min_scale``), as in Kingma et al.'s M1+M2 (a Gaussian p(x | y, z)
  with learnt variances on the M1 features).
* z1 on the sphere S^d in R^(d+1) (vMF, spherical Cauchy or Power Spherical M1): a von Mises-Fisher
  vMF(mu, kappa) with mean direction and concentration from the decoder (kappa = softplus +
  ``z1_min_concentration``). A Gaussian on R^(d+1) would put its mass off the sphere and reward shrinking
  its variance in the radial direction, in which the codes do not vary at all, so its density is not a
  likelihood of the codes; the vMF is the sphere's counterpart of an isotropic Gaussian, is the
  S-VAE's own family, and has an exact, differentiable log-density (``VonMisesFisher.log_prob``).

Dimension convention: z1 has ``z1_latent.event_size`` coordinates (d, or d + 1 on the sphere S^d); z2 has
``latent.event_size``; every ``(B, ...)`` input gives ``(B,)`` outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.distributions import DiagonalNormal, VonMisesFisher
from hsvae.latents import LatentFamily

from .mlp import MLPDecoder


class M2(nn.Module):
    """Kingma et al.'s M2 on M1 codes.

    Args:
        z1_latent: the M1 latent family: only its geometry is used (``event_size``, ``spherical``), to size the
            networks and choose the likelihood of z1 (Gaussian in R^d, vMF on the sphere).
        latent: the M2 latent family of z2 (its posterior, prior and KL).
        num_classes: C, the number of classes of y.
        hidden: hidden layer sizes of each of the three networks (classifier, encoder, decoder; ReLU).
            Kingma et al. use one hidden layer of 500 units.
        z1_min_scale: lower bound of the Gaussian likelihood's scale (keeps log p(z1 | y, z2) bounded).
        z1_min_concentration: lower bound of the vMF likelihood's concentration.
    """

    def __init__(
        self,
        z1_latent: LatentFamily,
        latent: LatentFamily,
        num_classes: int = 10,
        hidden: Sequence[int] = (500,),
        z1_min_scale: float = 1e-3,
        z1_min_concentration: float = 1.0,
    ):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"M2: num_classes must be an integer >= 2, got {num_classes!r}")
        if not z1_min_scale > 0:
            raise ValueError(f"M2: z1_min_scale must be > 0, got {z1_min_scale}")
        if not z1_min_concentration >= 0:
            raise ValueError(f"M2: z1_min_concentration must be >= 0, got {z1_min_concentration}")
        hidden = list(hidden)
        self.num_classes = num_classes
        self.z1_size = z1_latent.event_size
        self.z1_spherical = bool(z1_latent.spherical)
        self.z1_min_scale, self.z1_min_concentration = z1_min_scale, z1_min_concentration
        self.latent = latent
        # likelihood parameters: (mu, scale) in R^d, or (direction, concentration) on S^d in R^(d+1)
        z1_params = self.z1_size + 1 if self.z1_spherical else 2 * self.z1_size
        self.classifier = MLPDecoder(self.z1_size, num_classes, hidden)
        self.encoder = MLPDecoder(self.z1_size + num_classes, latent.raw_size, hidden)
        self.decoder = MLPDecoder(latent.event_size + num_classes, z1_params, hidden[::-1])

    # -- the pieces ----------------------------------------------------------------------------
    def _check(self, z1: torch.Tensor) -> None:
        if z1.dim() != 2 or z1.shape[-1] != self.z1_size:
            raise ValueError(
                f"M2 expects z1 of shape (B, {self.z1_size}) (the M1 latent's coordinates), got {tuple(z1.shape)}"
            )

    def classify(self, z1: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | z1), shape ``(B, C)``."""
        self._check(z1)
        return self.classifier(z1)

    def posterior(self, z1: torch.Tensor, y_onehot: torch.Tensor) -> Distribution:
        """q(z2 | z1, y)."""
        return self.latent.posterior(self.encoder(torch.cat([z1, y_onehot], -1)))

    def likelihood(self, z2: torch.Tensor, y_onehot: torch.Tensor) -> Distribution:
        """p(z1 | y, z2): a diagonal Gaussian on R^d, or a vMF on the sphere."""
        params = self.decoder(torch.cat([z2, y_onehot], -1))
        if self.z1_spherical:
            direction, s = params[..., : self.z1_size], params[..., self.z1_size]
            loc = direction / direction.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(params.dtype).tiny)
            return VonMisesFisher(loc, F.softplus(s) + self.z1_min_concentration)
        loc, s = params.split(self.z1_size, dim=-1)
        return DiagonalNormal(loc, F.softplus(s) + self.z1_min_scale)

    def labelled_bound(
        self, z1: torch.Tensor, y: torch.Tensor, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L(z1, y) per point, as ``(value, surrogate)``. ``value`` is the bound; ``surrogate`` is what training
        maximises: its KL term is weighted by ``kl_weight`` (a warm-up; 1: the bound itself), and its gradient is
        the M2 latent's estimator of the bound's (see :class:`~hsvae.latents.PosteriorSample`)."""
        self._check(z1)
        y_onehot = F.one_hot(y, self.num_classes).to(z1.dtype)
        q = self.posterior(z1, y_onehot)
        sample = self.latent.rsample(q)
        reconstruction = self.likelihood(sample.z, y_onehot).log_prob(z1)
        kl = self.latent.kl(q, sample)
        value = reconstruction - kl - math.log(self.num_classes)
        return value, sample.surrogate(reconstruction) - kl_weight * kl - math.log(self.num_classes)

    def unlabelled_bound(
        self, z1: torch.Tensor, logits: torch.Tensor | None = None, kl_weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """U(z1) = sum_y q(y|z1) L(z1, y) + H(q(y|z1)) per point, as ``(value, surrogate)`` (see
        :meth:`labelled_bound`); the sum over y is exact. ``logits``: q(y|z1)'s, if already computed."""
        self._check(z1)
        b, c = z1.shape[0], self.num_classes
        logits = self.classify(z1) if logits is None else logits
        log_qy = logits.log_softmax(-1)
        qy = log_qy.exp()
        # all (point, class) pairs at once: row i * C + y
        value, surrogate = self.labelled_bound(
            z1.repeat_interleave(c, 0), torch.arange(c, device=z1.device).repeat(b), kl_weight
        )
        entropy = -(qy * log_qy).sum(-1)
        return ((qy * value.view(b, c)).sum(-1) + entropy, (qy * surrogate.view(b, c)).sum(-1) + entropy)
