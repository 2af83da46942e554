"""The Power Spherical distribution of De Cao and Aziz (2020).

Dimension convention (as everywhere in this package): the distribution lives on the unit
sphere S^(m-1) in R^m; ``m`` -- the *ambient* dimension -- is the size of the last axis of
``loc``; ``batch_shape == loc.shape[:-1]`` and ``event_shape == (m,)``.

Density with respect to the surface measure, for a unit vector ``mu`` and ``kappa >= 0``:

    f(x) = N_m(kappa) (1 + mu.x)^kappa,
    log N_m(kappa) = -[(alpha + beta) log 2 + lgamma(alpha) - lgamma(alpha + beta) + beta log pi],

with alpha = (m-1)/2 + kappa and beta = (m-1)/2. The cosine t = mu.x is 2 B - 1 with
B ~ Beta(alpha, beta), which gives an exact sampler without rejection, reparameterised in
kappa through the Gamma draws of B.

Subtracting the uniform's log-density (the kappa = 0 case), the log 2 and log pi terms cancel:

    KL(q || uniform) = D(kappa) + kappa (digamma(alpha) - digamma(alpha + beta)),
    D(kappa) = [lgamma(m - 1 + kappa) - lgamma(m - 1)] - [lgamma(beta + kappa) - lgamma(beta)],

which is O(kappa^2) near 0. The lgamma terms are O(m log m) and cancel to that small value,
so these scalar (batch-sized) evaluations run in float64 for float16/32 inputs (except on
MPS, which has no float64).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints, register_kl

from ._sphere import check_ambient_dim, householder_rotate, log_sphere_surface, sample_uniform_sphere, unit_vector
from .spherical_cauchy import _check_same_sphere, broadcast_loc_and_scale, check_unit_loc
from .uniform import HypersphericalUniform

__all__ = ["PowerSpherical", "power_spherical_kl_to_uniform"]


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float64 where that is available, for the cancelling lgamma/digamma sums."""
    if x.dtype != torch.float64 and x.device.type != "mps":
        return x.double()
    return x


def _log_normaliser_shift(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """D(kappa) above, in float64 where available: log N_m(kappa) = -log|S^(m-1)| + D - kappa log 2."""
    beta = 0.5 * (m - 1)
    k = _wide(kappa)
    return (torch.lgamma(k + (m - 1)) - math.lgamma(m - 1)) - (torch.lgamma(k + beta) - math.lgamma(beta))


def power_spherical_kl_to_uniform(kappa: torch.Tensor, m: int) -> torch.Tensor:
    """KL(PowerSpherical(mu, kappa) || uniform on S^(m-1)), elementwise in ``kappa``; m is ambient."""
    check_ambient_dim(m)
    beta = 0.5 * (m - 1)
    k = _wide(kappa)
    kl = _log_normaliser_shift(kappa, m) + k * (torch.digamma(k + beta) - torch.digamma(k + (m - 1)))
    return kl.to(kappa.dtype)


class _FiniteNonnegative(constraints.Constraint):
    """Finite reals >= 0 (kappa = inf has no sampler or density)."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value >= 0) & torch.isfinite(value)

    def __repr__(self) -> str:
        return "finite_nonnegative()"


class PowerSpherical(Distribution):
    """Power Spherical distribution on S^(m-1) in R^m (De Cao and Aziz, 2020).

    Dimension convention: ``m`` is the *ambient* dimension, the size of the last axis of
    ``loc``; ``batch_shape == loc.shape[:-1]``, ``event_shape == (m,)``. For a latent of
    intrinsic dimension d use m = d + 1.

    Args:
        loc: mean direction mu, unit vectors of shape ``batch_shape + (m,)``.
        scale: the concentration kappa >= 0 (finite), broadcastable to ``batch_shape`` (a
            trailing axis of size 1, as in ``(B, 1)`` with a ``(B, m)`` loc, is squeezed).
            kappa = 0 is the uniform distribution.
        validate_args: torch's validation switch; when on, bad parameters raise ``ValueError``.

    Sampling is exact (no rejection): t = mu.x = 2 B - 1, B ~ Beta(alpha, beta) drawn as
    G_a / (G_a + G_b) from two Gamma variates (so that 1 - t and 1 + t keep their digits),
    a uniform tangent direction, and the Householder reflection of e1 onto mu. Gradients
    with respect to kappa flow through the reparameterised Gamma draw.
    """

    arg_constraints = {"loc": unit_vector, "scale": _FiniteNonnegative()}
    support = unit_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, validate_args: bool | None = None):
        self.loc, self.scale, self.m = broadcast_loc_and_scale(loc, scale, "PowerSpherical", "scale (kappa)")
        batch_shape = self.loc.shape[:-1]
        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            check_unit_loc(self.loc, "PowerSpherical")
            if not bool(self.arg_constraints["scale"].check(self.scale).all()):
                raise ValueError(
                    "PowerSpherical: scale (kappa) must be finite and >= 0; got values in "
                    f"[{self.scale.min().item():.6g}, {self.scale.max().item():.6g}]"
                    + (" including NaN" if bool(self.scale.isnan().any()) else "")
                )
        super().__init__(batch_shape, torch.Size([self.m]), validate_args=False)
        self._validate_args = validate

    @property
    def concentration(self) -> torch.Tensor:
        """The concentration kappa (an alias of ``scale``)."""
        return self.scale

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(PowerSpherical, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + (self.m,))
        new.scale = self.scale.expand(batch_shape)
        new.m = self.m
        super(PowerSpherical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        beta = 0.5 * (self.m - 1)
        # torch._standard_gamma is what torch.distributions.Gamma.rsample uses; it carries the
        # implicit reparameterisation gradient in its concentration.
        g_a = torch._standard_gamma((self.scale + beta).expand(shape))
        g_b = torch._standard_gamma(torch.full(shape, beta, dtype=self.loc.dtype, device=self.loc.device))
        total = g_a + g_b
        t = (g_a - g_b) / total
        # sqrt(1 - t^2) = 2 sqrt(g_a g_b) / (g_a + g_b), without the cancellation of 1 - t^2 at large kappa.
        radial = 2.0 * g_a.sqrt() * g_b.sqrt() / total
        v = sample_uniform_sphere(shape, self.m - 1, dtype=self.loc.dtype, device=self.loc.device)
        x = torch.cat([t.unsqueeze(-1), radial.unsqueeze(-1) * v], dim=-1)
        return householder_rotate(x, self.loc)

    def sample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def _log_normaliser(self) -> torch.Tensor:
        kappa = self.scale
        shift = _log_normaliser_shift(kappa, self.m) - _wide(kappa) * math.log(2.0)
        return (shift - log_sphere_surface(self.m)).to(kappa.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cos = (value * self.loc).sum(-1)
        # xlogy: 0 * log(0) = 0 at kappa = 0 and x = -mu.
        return self._log_normaliser() + torch.xlogy(self.scale, 1.0 + cos)

    def kl_to_uniform(self) -> torch.Tensor:
        """KL(self || HypersphericalUniform(m)), shape ``batch_shape``."""
        return power_spherical_kl_to_uniform(self.scale, self.m)

    def entropy(self) -> torch.Tensor:
        return log_sphere_surface(self.m) - self.kl_to_uniform()

    @property
    def mean(self) -> torch.Tensor:
        # E[t] = (alpha - beta) / (alpha + beta) = kappa / (m - 1 + kappa)
        kappa = self.scale
        return (kappa / (kappa + (self.m - 1))).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def __repr__(self) -> str:
        return f"PowerSpherical(m={self.m}, batch_shape={tuple(self.batch_shape)})"


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_spherical_uniform(p: PowerSpherical, q: HypersphericalUniform) -> torch.Tensor:
    _check_same_sphere(p.m, q, "PowerSpherical")
    kl = p.kl_to_uniform()
    if q.batch_shape in (p.batch_shape, torch.Size()):
        return kl
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
