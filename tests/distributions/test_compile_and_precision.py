"""The distributions under torch.compile and under autocast.

Compile: every family's ``rsample``, ``log_prob``, ``entropy`` and KLs trace as one graph
(``torch.compile(fullgraph=True)`` raises on a graph break), with the values and gradients of eager execution:
exactly the same computations for the deterministic ones; for the samplers without rejection (spherical Cauchy,
Power Spherical) the same samples from the same seed; for the vMF, whose rejection sampler draws a fixed number
of proposals per row inside a graph, samples on the sphere with E[mu.x] = A_m(kappa) (5 standard errors).
The default tier traces the vMF (the rejection sampler and the Bessel functions) with the ``aot_eager`` backend
(the graph capture and the autograd graph, without code generation); the ``slow`` tier traces every family and
compiles them with inductor.

Autocast: under ``torch.autocast`` to bfloat16 and float16, with half-precision parameters as a network head
gives them, every quantity is float32, finite over the robustness grid, and equal to the float32 evaluation of
the same (rounded) parameters: the matrix products inside (Bessel series, dot products, quadrature sums) do not
drop to half precision. The last test shows it matters: with autocast left on inside, the results differ.

Dimension convention: m is the ambient dimension (S^(m-1) in R^m).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.distributions import kl_divergence
from torch.nn import functional as F

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher

#: dynamo notes, once per function, that it traces through the cached constant builders (pure functions)
pytestmark = pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")

FAMILIES = {VonMisesFisher: (0.5, 4.0, 60.0), PowerSpherical: (0.0, 4.0, 60.0), SphericalCauchy: (0.0, 0.5, 0.95)}
#: the robustness grid of the autocast test (as the distributions' own robustness tests)
GRID = {VonMisesFisher: [1e-4, 1.0, 1e2, 1e4], PowerSpherical: [0.0, 1e-3, 1.0, 1e4],
        SphericalCauchy: [0.0, 1e-6, 0.5, 0.999]}


def _params(family, m, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    loc = F.normalize(torch.randn(3, m, generator=g, dtype=dtype), dim=-1).requires_grad_()
    scale = torch.tensor(FAMILIES[family], dtype=dtype).requires_grad_()
    return loc, scale


def _operations(family, m):
    """name -> f(loc, scale) for every operation a latent uses (values summed to a scalar for the gradient)."""
    other = VonMisesFisher(F.normalize(torch.ones(m), dim=0), torch.tensor(3.0))
    ops = {
        "log_prob": lambda loc, scale: family(loc, scale).log_prob(F.normalize(loc.detach().flip(0), dim=-1)),
        "entropy": lambda loc, scale: family(loc, scale).entropy(),
        "kl_uniform": lambda loc, scale: kl_divergence(family(loc, scale), HypersphericalUniform(m)),
        "kl_vmf": lambda loc, scale: kl_divergence(family(loc, scale), other),
    }
    if family is SphericalCauchy:
        partner = SphericalCauchy(F.normalize(torch.ones(m), dim=0), torch.tensor(0.3))
        ops["kl_pair"] = lambda loc, scale: kl_divergence(family(loc, scale), partner)
    return ops


def _compiled(fn, backend):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=backend)


def _check_deterministic_ops(family, m, backend):
    for name, op in _operations(family, m).items():
        loc, scale = _params(family, m)
        eager = op(loc, scale)
        eager_grads = torch.autograd.grad(eager.sum(), (loc, scale), allow_unused=True)
        loc2, scale2 = _params(family, m)
        compiled = _compiled(op, backend)(loc2, scale2)
        grads = torch.autograd.grad(compiled.sum(), (loc2, scale2), allow_unused=True)
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6, msg=f"{family.__name__}.{name}")
        for g, e in zip(grads, eager_grads):  # (None: the quantity does not depend on loc, e.g. the entropy)
            assert (g is None) == (e is None) or torch.count_nonzero(g if e is None else e) == 0
            if g is not None and e is not None:
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=f"{family.__name__}.{name} gradient")


def _check_samplers(family, m, backend):
    def draw(loc, scale):
        return family(loc, scale).rsample((2000,))

    loc, scale = _params(family, m)
    torch.manual_seed(7)
    compiled = _compiled(draw, backend)(loc, scale)
    assert compiled.shape == (2000, 3, m)
    torch.testing.assert_close(compiled.norm(dim=-1), torch.ones(2000, 3), rtol=0, atol=1e-5)
    if family is VonMisesFisher:
        # a different sampler path (fixed proposal rounds): compare the law, E[mu.x] = A_m(kappa)
        cosine = (compiled.detach() * loc.detach()).sum(-1)
        expected = family(loc.detach(), scale.detach()).mean_resultant_length
        error = (cosine.mean(0) - expected).abs()
        assert (error <= 5 * cosine.std(0) / 2000**0.5 + 1e-6).all(), (error, expected)
        (grad_kappa,) = torch.autograd.grad((compiled * loc.detach()).sum(), scale)
        assert torch.isfinite(grad_kappa).all() and (grad_kappa > 0).all()  # E[mu.x] rises with kappa
        return
    torch.manual_seed(7)
    eager = draw(loc, scale)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    weights = torch.randn(m)
    eager_grads = torch.autograd.grad((eager @ weights).sum(), (loc, scale))
    compiled_grads = torch.autograd.grad((compiled @ weights).sum(), (loc, scale))
    for g, e in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family, m", [(VonMisesFisher, 11), pytest.param(VonMisesFisher, 3, marks=pytest.mark.slow),
                                       *(pytest.param(f, m, marks=pytest.mark.slow)
                                         for f in (PowerSpherical, SphericalCauchy) for m in (3, 11))],
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_every_operation_traces_as_one_graph_with_eager_values(family, m):
    _check_deterministic_ops(family, m, "aot_eager")
    _check_samplers(family, m, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f.__name__)
def test_inductor_compiles_every_operation_with_eager_values(family):
    import torch._inductor.config as inductor_config

    # inductor's own random number generator would draw other noise than eager: use torch's for the comparison
    with inductor_config.patch(fallback_random=True):
        _check_deterministic_ops(family, 11, "inductor")
        _check_samplers(family, 11, "inductor")


def _evaluate(family, m, scale_values, half, autocast):
    """Every quantity for unit-vector loc (float32, as the latents normalise it) and a concentration in
    ``half`` precision, under autocast to ``half`` or not (then the same rounded concentration in float32)."""
    torch.manual_seed(m)
    loc = F.normalize(torch.randn(4, m), dim=-1)
    scale = torch.tensor(scale_values)
    if family is not SphericalCauchy:  # (rho = 0.999 is not representable in bfloat16: rho stays float32)
        scale = scale.to(half) if autocast else scale.to(half).float()
    scale.requires_grad_()
    context = torch.autocast("cpu", dtype=half) if autocast else contextlib.nullcontext()
    with context:
        q = family(loc, scale)
        x = q.rsample((3,))
        other = VonMisesFisher(loc.flip(0), torch.tensor([1.0, 5.0, 50.0, 500.0]))
        out = {"log_prob": q.log_prob(loc.flip(0)), "entropy": q.entropy(),
               "kl_uniform": kl_divergence(q, HypersphericalUniform(m)), "kl_vmf": kl_divergence(q, other),
               "sample_norm": x.norm(dim=-1)}
        (grad,) = torch.autograd.grad(sum(v.sum() for k, v in out.items() if k != "sample_norm") + x.sum(), scale)
    return out, grad


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [2, 3, 10, 257, 1025])
def test_under_autocast_everything_is_float32_finite_and_unchanged(half, m):
    for family, values in GRID.items():
        reference, _ = _evaluate(family, m, values, half, autocast=False)
        got, grad = _evaluate(family, m, values, half, autocast=True)
        assert torch.isfinite(grad).all(), family.__name__
        for name, value in got.items():
            assert value.dtype == torch.float32 and torch.isfinite(value).all(), (family.__name__, name, value)
            torch.testing.assert_close(value, reference[name], rtol=1e-6, atol=1e-6,
                                       msg=f"{family.__name__} {name} under autocast to {half}")


def test_autocast_inside_would_change_the_results(monkeypatch):
    """The same comparison with the autocast guard disabled: the vMF's Bessel series and the KLs' products drop to
    bfloat16 and move by more than float32 rounding (so the test above can fail)."""
    import hsvae.special.precision as precision

    # the callers hold the function itself (imported by name): replace its code, restored after the test
    monkeypatch.setattr(precision.autocast_off, "__code__", (lambda t: contextlib.nullcontext()).__code__)
    reference, _ = _evaluate(VonMisesFisher, 1025, GRID[VonMisesFisher], torch.bfloat16, autocast=False)
    got, _ = _evaluate(VonMisesFisher, 1025, GRID[VonMisesFisher], torch.bfloat16, autocast=True)
    difference = max(((got[k] - reference[k]).abs() / (reference[k].abs() + 1)).max().item() for k in reference)
    assert difference > 1e-4
