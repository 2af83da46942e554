"""The KL divergences between the spherical families, beyond each family's KL to the uniform.

Dimension convention (as everywhere in this package): every distribution lives on S^(m-1) in R^m, m the size
of ``loc``'s last axis; a KL needs both sides on the same sphere.

Closed forms, registered with ``torch.distributions.kl.register_kl`` (so ``kl_divergence`` finds them):

* **KL(q || vMF(mu_p, kappa_p))** for q any of vMF, Power Spherical, spherical Cauchy and the uniform: log p is
  linear in x, so only q's KL to the uniform and its mean E_q[x] = A_q mu_q enter:
  KL = KL(q || U) + (L_p - kappa_p) + kappa_p [(1 - A_q) + A_q (1 - mu_p.mu_q)], with L_p = log 0F1(; m/2;
  kappa_p^2 / 4) (so L_p - kappa_p stays moderate) and 1 - mu_p.mu_q = |mu_p - mu_q|^2 / 2: each term is small
  where the KL is, so q = p gives 0 without cancelling large numbers.
* **KL(U || Power Spherical)** = -D(kappa) - kappa (psi((m-1)/2) - psi(m-1)), D the log-normaliser shift of
  :mod:`~hsvae.distributions.power_spherical` (E_U[log(1 + mu.x)] = log 2 + psi((m-1)/2) - psi(m-1), from
  (1 + mu.x)/2 ~ Beta((m-1)/2, (m-1)/2) under the uniform).
* **KL(U || spherical Cauchy)** = KL(spherical Cauchy || U): with F(rho) = E_U log|x - rho mu|^2, both are
  (m - 1) (F(rho) - log(1 - rho^2)) (the Moebius map sends |u + rho mu|^2 to (1 - rho^2)^2 / |x - rho mu|^2).
* **KL(spherical Cauchy(mu_1, rho_1) || spherical Cauchy(mu_2, rho_2))** = KL(spherical Cauchy(., rho*) || U),
  rho* = |w_1 - w_2| / sqrt(|w_1 - w_2|^2 + (1 - rho_1^2)(1 - rho_2^2)), w_i = rho_i mu_i: the family is the orbit of
  the uniform under the Moebius maps of the unit ball, which carry the parameter w with them (Kato and McCullagh,
  2020), and a KL is unchanged when both sides are mapped; the map sending w_1 to 0 sends w_2 to a point at the
  pseudo-hyperbolic distance rho* = |w_1 - w_2| / [w_1, w_2] from 0 ([a, b]^2 = 1 - 2 a.b + |a|^2 |b|^2, written
  as the sum above so that nothing cancels). The KL is symmetric in the two sides.
* **KL(U || U)** = 0.

Each closed form is clamped at 0: where the KL is 0 (q = p, a zero concentration) rounding may fall below it.

Pairs whose cross term E_q[log p] has no closed form (a Power Spherical p with a non-uniform q, a spherical
Cauchy p with a vMF or Power Spherical q) are not registered: ``kl_divergence`` raises ``NotImplementedError`` for them rather than return
an estimate in its place; :func:`monte_carlo_kl` gives one explicitly, with its standard error.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import Distribution, register_kl

from hsvae.special import bessel_iv_terms

from ._spherical_utils import SphericalDistribution, check_same_sphere, in_float64, rowdot
from .power_spherical import PowerSpherical, _log_normaliser_shift
from .spherical_cauchy import SphericalCauchy, spherical_cauchy_kl_to_uniform
from .uniform import HypersphericalUniform
from .von_mises_fisher import VonMisesFisher

__all__ = ["MonteCarloKL", "monte_carlo_kl"]


@register_kl(SphericalDistribution, VonMisesFisher)
@register_kl(HypersphericalUniform, VonMisesFisher)
def _kl_to_von_mises_fisher(q: SphericalDistribution | HypersphericalUniform, p: VonMisesFisher) -> torch.Tensor:
    check_same_sphere(q, p)
    kappa_p = p.scale
    scaled_log_normaliser = bessel_iv_terms(0.5 * p.m - 1.0, kappa_p).log_hyp0f1_scaled  # L_p - kappa_p
    if isinstance(q, HypersphericalUniform):
        # E_U[x] = 0: KL = (L_p - kappa_p) + kappa_p = L_p
        kl = (scaled_log_normaliser + kappa_p).clamp_min(0.0)
        return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))
    a_q = q.mean_resultant_length
    diff = q.loc - p.loc
    one_minus_cos = 0.5 * rowdot(diff, diff)
    kl = q.kl_to_uniform() + scaled_log_normaliser + kappa_p * (q.mean_resultant_complement() + a_q * one_minus_cos)
    return kl.clamp_min(0.0)


@register_kl(HypersphericalUniform, PowerSpherical)
def _kl_uniform_to_power_spherical(q: HypersphericalUniform, p: PowerSpherical) -> torch.Tensor:
    check_same_sphere(q, p)
    kappa, beta = p.scale, 0.5 * (p.m - 1)
    k = in_float64(kappa)
    digamma_gap = (torch.digamma(k.new_tensor(beta)) - torch.digamma(k.new_tensor(2.0 * beta)))  # < 0
    kl = (-_log_normaliser_shift(kappa, p.m) - k * digamma_gap).clamp_min(0.0).to(kappa.dtype)
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@register_kl(HypersphericalUniform, SphericalCauchy)
def _kl_uniform_to_spherical_cauchy(q: HypersphericalUniform, p: SphericalCauchy) -> torch.Tensor:
    check_same_sphere(q, p)
    kl = spherical_cauchy_kl_to_uniform(p.scale, p.m)
    return kl.expand(torch.broadcast_shapes(q.batch_shape, p.batch_shape))


@register_kl(SphericalCauchy, SphericalCauchy)
def _kl_spherical_cauchy_pair(q: SphericalCauchy, p: SphericalCauchy) -> torch.Tensor:
    check_same_sphere(q, p)
    diff = q.scale.unsqueeze(-1) * q.loc - p.scale.unsqueeze(-1) * p.loc  # w_q - w_p
    gap = rowdot(diff, diff)  # |w_q - w_p|^2
    one_minus = ((1.0 - q.scale) * (1.0 + q.scale)) * ((1.0 - p.scale) * (1.0 + p.scale))
    # at w_q = w_p the KL is at its minimum, 0 with gradient 0, where sqrt's derivative would be infinite
    apart = gap > 0
    safe_gap = torch.where(apart, gap, torch.ones_like(gap))
    rho = torch.where(apart, (safe_gap / (safe_gap + one_minus)).sqrt(), torch.zeros_like(gap))
    return spherical_cauchy_kl_to_uniform(rho, q.m)


@register_kl(HypersphericalUniform, HypersphericalUniform)
def _kl_uniform_to_uniform(q: HypersphericalUniform, p: HypersphericalUniform) -> torch.Tensor:
    check_same_sphere(q, p)
    return torch.zeros(torch.broadcast_shapes(q.batch_shape, p.batch_shape), dtype=q.dtype, device=q.device)


class MonteCarloKL(NamedTuple):
    """A Monte-Carlo estimate of KL(q || p) and its standard error, shape ``broadcast(batch shapes)``."""

    estimate: torch.Tensor
    standard_error: torch.Tensor


def monte_carlo_kl(q: Distribution, p: Distribution, samples: int = 1000) -> MonteCarloKL:
    """KL(q || p) = E_q[log q(x) - log p(x)] by ``samples`` draws of q (reparameterised where q has
    ``rsample``, so the estimate carries a gradient), with its standard error: for the pairs without a closed
    form, asked for by name, never substituted for one."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 (the standard error needs two), got {samples!r}")
    x = q.rsample((samples,)) if q.has_rsample else q.sample((samples,))
    log_ratio = q.log_prob(x) - p.log_prob(x)
    return MonteCarloKL(log_ratio.mean(0), log_ratio.detach().std(0) / samples ** 0.5)
