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
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence


#: how a latent family computes its KL (see LatentFamily)
KL_ESTIMATORS = ("auto", "closed_form", "monte_carlo")


@dataclass(frozen=True)
class PosteriorSample:
    """A draw ``z ~ q(z | x)`` and how to differentiate an expectation through it.

    Models compute their objective ``f(z)`` and train on :meth:`surrogate` of it: the same value, with the
    gradient of ``E_q[f]``. For a reparameterised sampler that is ``f`` itself; a sampler with a correction term
    (the vMF's rejection sampler, ``grad_correction=True``) adds its score-function part here, so that no model
    knows which estimator its latent uses.
    """

    z: torch.Tensor  #: the sample, ``sample_shape + q.batch_shape + q.event_shape``
    score: torch.Tensor | None = None  #: zero-valued score of the sampler's correction, per draw (None: none)

    @property
    def needs_per_draw_terms(self) -> bool:
        """Whether :meth:`surrogate` uses ``per_draw`` (a model can skip computing them otherwise)."""
        return self.score is not None

    def surrogate(self, value: torch.Tensor, per_draw: torch.Tensor | None = None) -> torch.Tensor:
        """``value`` with the gradient of its expectation over the draws (same value).

        ``per_draw``: for each draw (shape ``sample_shape + q.batch_shape``), the part of ``value`` that depends
        on it; default ``value`` itself (one value per draw). A reduced objective (a sum over draws, as the
        VGAE's loss over nodes) passes its per-draw parts: leaving out the terms that do not depend on a draw
        keeps the estimate unbiased and removes their variance.
        """
        if self.score is None:
            return value
        per_draw = value if per_draw is None else per_draw
        # f + f.detach() * score: zero-valued, adds the score-function part of the gradient
        return value + (per_draw.detach() * self.score).sum_to_size(value.shape)


def latent_space(spheres: tuple[int, ...], dim: int) -> str:
    """The space of a d-dimensional latent in words, from its unit blocks (:attr:`LatentFamily.spheres`):
    ``"S^d in R^(d+1)"`` on one sphere, ``"S^1 x S^3 in R^6"`` on a product of spheres, else ``"R^d"``."""
    if not spheres:
        return f"R^{dim}"
    return " x ".join(f"S^{m - 1}" for m in spheres) + f" in R^{sum(spheres)}"


class LatentFamily(nn.Module, abc.ABC):
    """Base class of the latent families.

    Args:
        dim: intrinsic latent dimension d >= 1.
        kl: how :meth:`kl` computes KL(q || p): ``"closed_form"`` (the form registered with ``register_kl``;
            a posterior/prior pair without one is refused here, when the family is built), ``"monte_carlo"``
            (log q(z) - log p(z) at the posterior sample the objective uses, through its gradient estimator),
            or ``"auto"``: the closed form where one is registered, else Monte Carlo (what a learnt mixture or
            Power Spherical prior needs).
    """

    #: True for the families on the sphere (their samples and means are unit vectors).
    spherical: bool = False
    #: False for a deterministic autoencoder: no prior to sample or to importance-weight against.
    has_prior: bool = True

    def __init__(self, dim: int, kl: str = "auto"):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1 (the intrinsic latent dimension d), got {dim!r}")
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be one of {KL_ESTIMATORS}, got {kl!r}")
        self.dim = dim
        self.kl_estimator = kl
        self.closed_form_kl = False  # set by _choose_kl_estimator, which each family's constructor ends with
        # the prior's device and dtype: follows .to()/.double() of the model (not saved in checkpoints)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    @abc.abstractmethod
    def event_size(self) -> int:
        """Length of a latent sample's last axis (d for R^d, d + 1 for S^d)."""

    @property
    def spheres(self) -> tuple[int, ...]:
        """The sizes of the unit-norm blocks a sample is made of, in order: ``()`` in R^d, ``(d + 1,)`` on S^d,
        one per factor on a product of spheres (cosine distances, slerp and the VGAE's scale follow them)."""
        return ()

    @property
    def prior_is_learnt(self) -> bool:
        """Whether the prior has parameters trained with the model (latent plots then draw it): a family's only
        parameters are its prior's (the networks that produce the raw outputs belong to the model)."""
        return any(True for _ in self.parameters())

    @property
    @abc.abstractmethod
    def raw_size(self) -> int:
        """How many unconstrained numbers per data point the encoder must produce."""

    @abc.abstractmethod
    def posterior(self, raw: torch.Tensor) -> Distribution:
        """The posterior q(z | x) from raw encoder outputs of shape ``(..., raw_size)``."""

    def make_prior(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        """The prior p(z) on ``device`` in ``dtype``, with batch shape ``()``: by default that of the family's
        ``prior_module`` (:mod:`hsvae.latents.priors`, the Gaussian and spherical families' choice of prior)."""
        return self.prior_module.distribution(device, dtype)

    def prior(self, like: torch.Tensor | None = None) -> Distribution:
        """The prior p(z), batch shape ``()``, on ``like``'s device and dtype (default: this module's)."""
        reference = self._anchor if like is None else like
        return self.make_prior(reference.device, reference.dtype)

    def rsample(self, q: Distribution, sample_shape: torch.Size | tuple = torch.Size()) -> PosteriorSample:
        """A reparameterised draw from the posterior ``q`` (see :class:`PosteriorSample`)."""
        return PosteriorSample(q.rsample(torch.Size(sample_shape)))

    def _choose_kl_estimator(self) -> None:
        """Decide once, when the family is built, whether :meth:`kl` uses a closed form, by trying the registered
        KL on a posterior and the prior (which also settles composite pairs: a product of spheres has a closed form
        only where every factor's pair has one)."""
        q = self.posterior(self._anchor.new_ones(self.raw_size))
        p = self.prior()
        try:
            kl_divergence(q, p)
            available = True
        except NotImplementedError:
            available = False
        if self.kl_estimator == "closed_form" and not available:
            raise ValueError(f"kl=closed_form, but KL({type(q).__name__} || {type(p).__name__}) has no closed form: "
                             f"set kl=monte_carlo (or auto) for an estimate, or choose a prior with a closed-form KL")
        self.closed_form_kl = available and self.kl_estimator != "monte_carlo"

    def kl(self, q: Distribution, sample: PosteriorSample | None = None) -> torch.Tensor:
        """KL(q || p) per data point (shape ``q.batch_shape``, or the sample's leading shape for Monte Carlo).

        The closed form registered with ``torch.distributions.kl.register_kl`` when the family uses one (see
        ``kl`` in :class:`LatentFamily`), otherwise the Monte-Carlo estimate log q(z) - log p(z) at the posterior
        sample (which must then be given), with the gradient of its expectation (:meth:`PosteriorSample.surrogate`).
        """
        p = self.prior(q.mean if sample is None else sample.z)
        if self.closed_form_kl:
            return kl_divergence(q, p)
        if sample is None:
            raise ValueError(f"{type(self).__name__}: its KL is a Monte-Carlo estimate (kl={self.kl_estimator!r}); "
                             f"pass the posterior sample")
        return sample.surrogate(q.log_prob(sample.z) - p.log_prob(sample.z))

    def point(self, q: Distribution) -> torch.Tensor:
        """A point summary of the posterior for embeddings, k-NN and plots: its location parameter."""
        return q.loc

    def extra_repr(self) -> str:
        return f"dim={self.dim}, event_size={self.event_size}"
