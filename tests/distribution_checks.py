"""Checks shared by the distribution test modules."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import HypersphericalUniform

#: ambient dimensions m of the statistical checks, and of the checks against an oracle (which reach further)
STAT_DIMS = [2, 3, 5, 10, 65, 257]
ORACLE_DIMS = [2, 3, 5, 10, 65, 257, 1025, 4097]


def unit_vector(m: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A fixed random unit vector of R^m (drawn in float64 from ``seed``, then cast to ``dtype``)."""
    v = torch.randn(m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm()).to(dtype)


def assert_finite_everywhere(family, m: int, scale_values: list[float], dtype: torch.dtype) -> None:
    """Samples (unit norm), log_prob, KL to the uniform, entropy, mean and the gradients in loc and scale
    are finite for one batch holding every value of ``scale_values``; the KL is non-negative."""
    torch.manual_seed(m)
    loc = torch.nn.functional.normalize(torch.randn(len(scale_values), m, dtype=dtype), dim=-1).requires_grad_()
    scale = torch.tensor(scale_values, dtype=dtype).requires_grad_()
    q = family(loc, scale)
    p = HypersphericalUniform(m, dtype=dtype)
    x = q.rsample((32,))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.isfinite(x).all() and ((x.norm(dim=-1) - 1).abs() < tol).all()
    log_prob = q.log_prob(x)
    kl, entropy = kl_divergence(q, p), q.entropy()
    for value in (log_prob, kl, entropy, q.mean):
        assert torch.isfinite(value).all()
    assert (kl >= 0).all()
    loss = x.sum() + log_prob.sum() + kl.sum() + entropy.sum()
    grad_loc, grad_scale = torch.autograd.grad(loss, (loc, scale))
    assert torch.isfinite(grad_loc).all() and torch.isfinite(grad_scale).all()


def assert_bad_input_named(family, scale: float, off_sphere: list[float], other_m: int) -> None:
    """With validation on, each bad input of a spherical family (on S^2 in R^3) is a ValueError naming it: a
    loc that is not unit-norm, a loc with m = 1, a scale that does not broadcast, a log_prob argument off the
    sphere (``off_sphere``), and a KL to the uniform on another sphere (ambient dimension ``other_m``)."""
    with pytest.raises(ValueError, match="loc"):
        family(torch.tensor([1.0, 1.0, 0.0]), scale, validate_args=True)
    with pytest.raises(ValueError, match="loc.*m"):
        family(torch.ones(3, 1), scale)
    with pytest.raises(ValueError, match="scale"):
        family(torch.nn.functional.normalize(torch.randn(4, 3), dim=-1), torch.full((5,), scale))
    q = family(torch.tensor([1.0, 0.0, 0.0]), scale, validate_args=True)
    with pytest.raises(ValueError, match="support"):
        q.log_prob(torch.tensor(off_sphere))
    with pytest.raises(ValueError, match="ambient dimensions differ"):
        kl_divergence(q, HypersphericalUniform(other_m))


def assert_fused_node_matches_autograd(node, parts, noise: tuple, params: tuple, check_params: tuple | None = None):
    """A ``fused_sampler_node``'s hand-written vector-Jacobian product equals plain autograd through ``parts``
    (the same operations), for a random output gradient; gradcheck and gradgradcheck (double backward) pass at
    ``check_params`` (default ``params``). Returns the sample."""
    x = node.apply(*noise, *params)
    grad_out = torch.randn_like(x)
    fused = torch.autograd.grad(x, params, grad_out)
    plain = torch.autograd.grad(parts(*noise, *params)[-1], params, grad_out)
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f, p, rtol=1e-10, atol=1e-12)
    inputs = tuple(t.detach().clone().requires_grad_() for t in (check_params or params))
    assert torch.autograd.gradcheck(lambda *ps: node.apply(*noise, *ps), inputs)
    assert torch.autograd.gradgradcheck(lambda *ps: node.apply(*noise, *ps), inputs)
    return x

