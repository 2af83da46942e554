"""Tests of the von Mises-Fisher distribution (hsvae.distributions.von_mises_fisher).

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m), v = m/2 - 1.
Independent oracles: mpmath (Bessel functions at 60 digits) for A_m, dA/dkappa and the KL;
importance sampling against the uniform for the normaliser; Monte Carlo for the KL and entropy;
scipy's two-sample Kolmogorov-Smirnov test for Wood's sampler against the exact m = 3 sampler.
Statistical checks use 5 standard errors estimated from the sample; every test is seeded.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import kl_divergence

import hsvae.distributions.von_mises_fisher as vmf_module
from hsvae.distributions import HypersphericalUniform, VonMisesFisher
from hsvae.distributions._sphere import log_sphere_surface
from tests.distribution_checks import STAT_DIMS, unit_vector

STAT_KAPPAS = [1e-3, 1.0, 10.0, 1e3, 1e5]
ROBUST_DIMS = [2, 3, 5, 10, 65, 257, 1025, 4097]
ROBUST_KAPPAS = [1e-6, 1e-3, 1.0, 1e2, 1e4, 1e6]
F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# mpmath oracle
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _mp_vmf(m: int, kappa: float) -> tuple[float, float, float]:
    """(A_m, dA/dkappa, KL to the uniform) at 60 digits (the KL cancels to ~kappa^2/(2m))."""
    with mp.workdps(60):
        k, v = mp.mpf(kappa), mp.mpf(m) / 2 - 1
        i0 = mp.besseli(v, k, maxterms=10**6)
        a = mp.besseli(v + 1, k, maxterms=10**6) / i0
        d_a = 1 - a * a - (m - 1) * a / k
        log_c = v * mp.log(k) - (mp.mpf(m) / 2) * mp.log(2 * mp.pi) - mp.log(i0)
        log_area = mp.log(2) + (mp.mpf(m) / 2) * mp.log(mp.pi) - mp.loggamma(mp.mpf(m) / 2)
        return float(a), float(d_a), float(k * a + log_c + log_area)




def _within(estimate: torch.Tensor, truth: float, k: float = 5.0) -> tuple[bool, float]:
    """Is the mean of ``estimate`` within k standard errors of ``truth``? (flag, z-score)"""
    se = float(estimate.std()) / math.sqrt(estimate.numel())
    z = (float(estimate.mean()) - truth) / max(se, 1e-300)
    return abs(z) < k, z


# ---------------------------------------------------------------------------------------------
# closed forms against mpmath
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 5, 10, 65, 257, 1025, 4097])
def test_mean_entropy_kl_match_mpmath(m: int) -> None:
    kappas = [1e-6, 1e-3, 0.1, 1.0, 10.0, 1e2, 1e4, 1e6]
    loc = unit_vector(m).expand(len(kappas), m)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        q = VonMisesFisher(loc.to(dtype), torch.tensor(kappas, dtype=dtype))
        kl = kl_divergence(q, HypersphericalUniform(m, dtype=dtype))
        want = [_mp_vmf(m, k) for k in kappas]
        a_want = torch.tensor([w[0] for w in want], dtype=F64)
        kl_want = torch.tensor([w[2] for w in want], dtype=F64)
        assert kl.dtype == dtype and kl.shape == (len(kappas),)
        torch.testing.assert_close(q.mean_resultant_length.double(), a_want, rtol=tol, atol=0)
        torch.testing.assert_close(kl.double(), kl_want, rtol=tol, atol=0)
        torch.testing.assert_close(q.mean.double(), a_want[:, None] * loc.double(), rtol=tol, atol=1e-300)
        area = log_sphere_surface(m)
        torch.testing.assert_close(q.entropy().double(), area - kl_want, rtol=tol, atol=tol * abs(area))
        # KL -> 0 as kappa -> 0, like kappa^2 / (2m)
        assert 0 < float(kl[0]) < 1e-11


def test_kl_gradient_matches_closed_form() -> None:
    """d KL / d kappa = kappa dA/dkappa."""
    for m in (2, 3, 5, 65, 4097):
        kappas = [1e-3, 0.7, 3.0, 40.0, 1e3, 1e5]
        kappa = torch.tensor(kappas, dtype=F64, requires_grad=True)
        q = VonMisesFisher(unit_vector(m).expand(len(kappas), m), kappa)
        (grad,) = torch.autograd.grad(kl_divergence(q, HypersphericalUniform(m, dtype=F64)).sum(), kappa)
        want = torch.tensor([k * _mp_vmf(m, k)[1] for k in kappas], dtype=F64)
        torch.testing.assert_close(grad, want, rtol=1e-8, atol=0)


def test_m3_elementary_kl_matches_mpmath_on_both_sides_of_its_switch() -> None:
    """m = 3's KL and d KL / d kappa (series below kappa = 1, closed form above), in one call holding both sides
    (the CPU then evaluates both forms and selects), against kappa coth kappa - 1 - log(sinh kappa / kappa)."""
    kappa = torch.tensor([1e-6, 0.3, 0.999999, 1.0, 1.000001, 3.0, 40.0, 1e5], dtype=F64, requires_grad=True)
    kl = vmf_module.von_mises_fisher_kl_to_uniform(kappa, 3)
    (grad,) = torch.autograd.grad(kl.sum(), kappa)
    with mp.workdps(40):
        for k, got, d_got in zip(kappa.tolist(), kl.tolist(), grad.tolist()):
            x = mp.mpf(k)
            want = x * mp.coth(x) - 1 - mp.log(mp.sinh(x) / x)
            d_want = 1 / x - x / mp.sinh(x) ** 2
            assert abs(got - want) <= 1e-14 * want and abs(d_got - d_want) <= 1e-14 * d_want, k


def test_log_prob_against_the_density_formula() -> None:
    m, kappa = 7, 3.5
    loc = unit_vector(m)
    q = VonMisesFisher(loc, torch.tensor(kappa, dtype=F64))
    x = torch.nn.functional.normalize(torch.randn(5, m, dtype=F64), dim=-1)
    with mp.workdps(30):
        v = m / 2 - 1
        log_c = v * math.log(kappa) - m / 2 * math.log(2 * math.pi) - float(mp.log(mp.besseli(v, kappa)))
    torch.testing.assert_close(q.log_prob(x), log_c + kappa * (x @ loc), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.log_normalizer(), torch.tensor(log_c, dtype=F64), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------------------------
# sampling statistics
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", STAT_DIMS)
def test_samples_unit_norm_and_mean(m: int) -> None:
    torch.manual_seed(m)
    n = 20000
    loc = unit_vector(m, seed=m)
    kappa = torch.tensor(STAT_KAPPAS, dtype=F64)
    q = VonMisesFisher(loc.expand(len(STAT_KAPPAS), m), kappa)
    z = q.sample((n,))
    assert z.shape == (n, len(STAT_KAPPAS), m)
    # (at m = 2 the tangent part g - (g.loc) loc of a normal g at angle theta to loc cancels: |z| is off by
    # ~1e-16 / |sin theta|, up to ~1e-11 in 1e5 samples; at m >= 3 a near-parallel g is far rarer)
    assert float((z.norm(dim=-1) - 1).abs().max()) < (1e-10 if m == 2 else 1e-12)
    w = z @ loc
    for j, k in enumerate(STAT_KAPPAS):
        ok, score = _within(w[:, j], _mp_vmf(m, k)[0])
        assert ok, f"m={m} kappa={k}: E[loc.x] off by {score:.1f} standard errors"
        # the part orthogonal to loc averages to zero (the reflection is oriented right)
        ortho = z[:, j] - w[:, j, None] * loc
        se = ortho.std(0) / math.sqrt(n)
        assert bool((ortho.mean(0).abs() <= 5 * se + 1e-15).all()), f"m={m} kappa={k}"


@pytest.mark.parametrize("kappa", [0.3, 3.0, 30.0])
def test_wood_agrees_with_the_exact_sampler_at_m3(kappa: float) -> None:
    torch.manual_seed(3)
    loc = unit_vector(3)
    exact = VonMisesFisher(loc, torch.tensor(kappa, dtype=F64))
    wood = VonMisesFisher(loc, torch.tensor(kappa, dtype=F64))
    wood._exact_for_m3 = False
    w_exact = (exact.sample((20000,)) @ loc).numpy()
    w_wood = (wood.sample((20000,)) @ loc).numpy()
    assert scipy.stats.ks_2samp(w_exact, w_wood).pvalue > 1e-3
    # and both agree with the closed-form CDF (w has CDF (e^(k w) - e^-k) / (e^k - e^-k))
    cdf = lambda w: (torch.expm1(kappa * (torch.as_tensor(w) + 1)) / math.expm1(2 * kappa)).numpy()  # noqa: E731
    assert scipy.stats.kstest(w_wood, cdf).pvalue > 1e-3
    assert scipy.stats.kstest(w_exact, cdf).pvalue > 1e-3


def test_m5_beta_proposal_is_beta_2_2() -> None:
    """m = 5 draws Wood's Beta(2, 2) proposal by its inverse CDF (trigonometric): KS against Beta(2, 2), with b = 1,
    where Wood's ratio is 1 and every proposal is accepted."""
    torch.manual_seed(17)
    for dtype in (F64, torch.float32):
        t, accepted = vmf_module._propose(torch.ones(50000, dtype=dtype), 5, 1)
        assert bool(accepted.all())
        e = (0.5 + 0.5 * t.double()).flatten().numpy()
        assert scipy.stats.kstest(e, scipy.stats.beta(2, 2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("kappa", [0.5, 3.0, 40.0])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_m5_sampler_against_the_exact_cdf(kappa: float, dtype: torch.dtype) -> None:
    """w = loc.x at m = 5 has density prop. to e^(k w) (1 - w^2), whose CDF is elementary:
    F(w) prop. to e^(k w) [(1 - w^2)/k + 2 w/k^2 - 2/k^3] - (its value at w = -1)."""
    torch.manual_seed(18)
    loc = unit_vector(5).to(dtype)
    w = (VonMisesFisher(loc, torch.tensor(kappa, dtype=dtype)).sample((30000,)) @ loc).double().numpy()

    def antiderivative(s):
        s = np.asarray(s, dtype=np.float64)
        return np.exp(kappa * (s - 1.0)) * ((1 - s * s) / kappa + 2 * s / kappa**2 - 2 / kappa**3)

    low, high = antiderivative(-1.0), antiderivative(1.0)
    assert scipy.stats.kstest(w, lambda s: (antiderivative(s) - low) / (high - low)).pvalue > 1e-3


@pytest.mark.parametrize("m,kappa", [(2, 0.5), (5, 2.0), (65, 1e3), (1025, 30.0)])
def test_sync_free_block_sampler_is_exact(m: int, kappa: float) -> None:
    """The accelerator path (one pass, no host sync) run on CPU: same law of w."""
    torch.manual_seed(4)
    _assert_mean_w_exact(m, kappa, sync_free=True)


@pytest.mark.parametrize("m,kappa", [(5, 2.0), (11, 1e3)])
def test_cpu_retry_blocks_are_exact(m: int, kappa: float, monkeypatch) -> None:
    """The CPU path with a first block of one proposal per row, which leaves ~30% of the rows to the retry
    blocks (t[left] written, the unaccepted left again): same law of w."""
    monkeypatch.setattr(vmf_module, "_CPU_LEFTOVER_ROWS", 1e9)
    torch.manual_seed(19)
    _assert_mean_w_exact(m, kappa, sync_free=False)


def _assert_mean_w_exact(m: int, kappa: float, sync_free: bool) -> None:
    """E[w] of 20000 draws of the rejection sampler's path against mpmath, within its standard error."""
    k = torch.full((20000,), kappa, dtype=F64)
    t = vmf_module._accepted_beta(k, m, sync_free=sync_free)
    radial = vmf_module._wood_radial(k, t, m, with_derivative=False)
    ok, score = _within(1.0 - radial.one_minus_w, _mp_vmf(m, kappa)[0])
    assert ok, f"E[w] off by {score:.1f} standard errors"


@pytest.mark.parametrize("m,kappa", [(2, 1e4), (3, 1e4), (4, 5.0), (5, 1e3), (10, 20.0), (65, 1e4), (4097, 2e3)])
def test_acceptance_rate_bounds_hold(m: int, kappa: float) -> None:
    """The block sizes rest on lower bounds of the acceptance rate: check them empirically."""
    torch.manual_seed(5)
    k = torch.full((4000,), kappa, dtype=F64)
    b = vmf_module._wood_b(k, m)
    _, accepted = vmf_module._propose(b, m, 25)
    rate = accepted.double()
    bound = vmf_module._acceptance_lower_bound(m, kappa)
    assert float(rate.mean()) > bound - 5 * float(rate.std()) / math.sqrt(rate.numel())


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


def _kappa_gradient(m: int, kappa: float, n: int, corrected: bool, force_wood: bool = False) -> torch.Tensor:
    """Per-sample gradient estimates of d E[loc.x] / d kappa."""
    loc = unit_vector(m)
    k = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    q = VonMisesFisher(loc.expand(n, m), k)
    if force_wood:
        q._exact_for_m3 = False
    if corrected:
        z, correction = q.rsample_with_correction()
        f = z @ loc
        objective = f + f.detach() * correction
    else:
        objective = q.rsample() @ loc
    (grad,) = torch.autograd.grad(objective.sum(), k)
    return grad


@pytest.mark.parametrize(
    "m,kappa,force_wood", [(5, 2.0, False), (3, 2.0, True), (10, 5.0, False), (2, 1.0, False), (65, 40.0, False)]
)
def test_corrected_kappa_gradient_is_unbiased(m: int, kappa: float, force_wood: bool) -> None:
    torch.manual_seed(6)
    grad = _kappa_gradient(m, kappa, 100000, corrected=True, force_wood=force_wood)
    ok, score = _within(grad, _mp_vmf(m, kappa)[1])
    assert ok, f"corrected gradient off by {score:.1f} standard errors"


@pytest.mark.parametrize("m,kappa,force_wood", [(3, 2.0, False), (3, 2.0, True), (6, 4.0, False)])
def test_corrected_gradient_of_the_tangent_spread(m: int, kappa: float, force_wood: bool) -> None:
    """E[(a.z)^2] = |a|^2 A/kappa for a orthogonal to loc (E[zz^T] = (A/kappa) I + (1 - m A/kappa)
    loc loc^T); its kappa-gradient exercises the radial part sqrt(1 - w^2) of the sample."""
    torch.manual_seed(14)
    n = 100000
    loc = unit_vector(m)
    a = torch.randn(m, dtype=F64)
    a = a - (a @ loc) * loc
    k = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    q = VonMisesFisher(loc.expand(n, m), k)
    q._exact_for_m3 = not force_wood
    z, correction = q.rsample_with_correction()
    f = (z @ a) ** 2
    (grad,) = torch.autograd.grad((f + f.detach() * correction).sum(), k)
    big_a, d_a, _ = _mp_vmf(m, kappa)
    ok, score = _within(grad, float(a @ a) * (d_a * kappa - big_a) / kappa**2)
    assert ok, f"off by {score:.1f} standard errors"


@pytest.mark.parametrize("m,exact", [(2, False), (3, True), (3, False), (7, False)])
def test_sample_assembly_gradcheck(m: int, exact: bool) -> None:
    """The hand-written backward of the sample assembly against finite differences, noise fixed."""
    torch.manual_seed(15)
    shape = (3, 4)
    kappa = (torch.rand(4, dtype=F64) * 5 + 0.2).requires_grad_()
    loc = torch.nn.functional.normalize(torch.randn(4, m, dtype=F64), dim=-1).requires_grad_()
    t = torch.rand(shape, dtype=F64) * 1.8 - 0.9
    g = torch.randn(*shape, m, dtype=F64)

    def assemble(kappa, loc):
        if exact:
            torch.manual_seed(16)  # the same uniform draw at every evaluation
            radial = vmf_module._exact_m3(kappa.detach().expand(shape), True)
        else:
            radial = vmf_module._wood_radial(kappa.detach().expand(shape), t, m, True)
        return vmf_module._TangentSample.apply(g, *radial, kappa, loc)

    assert torch.autograd.gradcheck(assemble, (kappa, loc))


def test_uncorrected_gradient_is_biased_as_published() -> None:
    """REFERENCE.md: without the correction, d E[loc.x]/d kappa at m = 5, kappa = 2 is 0.1277
    where the truth is 0.1474."""
    torch.manual_seed(7)
    grad = _kappa_gradient(5, 2.0, 100000, corrected=False)
    assert _mp_vmf(5, 2.0)[1] == pytest.approx(0.1474, abs=1e-4)
    ok, score = _within(grad, 0.1474)
    assert not ok and score < -20
    assert _within(grad, 0.1277, k=6)[0]


def test_exact_m3_sampler_gradient_needs_no_correction() -> None:
    torch.manual_seed(8)
    grad = _kappa_gradient(3, 2.0, 100000, corrected=False)
    ok, score = _within(grad, _mp_vmf(3, 2.0)[1])
    assert ok, f"off by {score:.1f} standard errors"
    _, correction = VonMisesFisher(unit_vector(3), torch.tensor(2.0, dtype=F64)).rsample_with_correction((4,))
    assert correction.shape == (4,) and bool((correction == 0).all())


def test_correction_is_zero_valued_with_the_right_shape() -> None:
    torch.manual_seed(9)
    kappa = torch.tensor([[1.0], [5.0]], dtype=F64, requires_grad=True)
    q = VonMisesFisher(torch.stack([unit_vector(6, seed=1), unit_vector(6, seed=2)]), kappa)
    z, correction = q.rsample_with_correction((3,))
    assert z.shape == (3, 2, 6) and correction.shape == (3, 2)
    assert bool((correction == 0).all()) and correction.requires_grad


# ---------------------------------------------------------------------------------------------
# robustness
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m", ROBUST_DIMS)
def test_finite_everything_over_the_parameter_grid(m: int, dtype: torch.dtype) -> None:
    torch.manual_seed(11)
    loc = torch.nn.functional.normalize(torch.randn(len(ROBUST_KAPPAS), m, dtype=dtype), dim=-1).requires_grad_()
    kappa = torch.tensor(ROBUST_KAPPAS, dtype=dtype).requires_grad_()
    q = VonMisesFisher(loc, kappa)
    z, correction = q.rsample_with_correction((64,))
    assert z.dtype == dtype and z.shape == (64, len(ROBUST_KAPPAS), m)
    assert torch.isfinite(z).all()
    assert float((z.detach().norm(dim=-1) - 1).abs().max()) < (1e-5 if dtype == torch.float32 else 1e-12)
    log_prob = q.log_prob(z.detach())
    kl = kl_divergence(q, HypersphericalUniform(m, dtype=dtype))
    entropy = q.entropy()
    for value in (log_prob, kl, entropy, q.mean, correction):
        assert torch.isfinite(value).all()
    assert (kl >= 0).all()
    f = z.sum(-1)
    total = (f + f.detach() * correction).sum() + log_prob.sum() + kl.sum() + entropy.sum() + q.mean.sum()
    g_loc, g_kappa = torch.autograd.grad(total, (loc, kappa))
    assert torch.isfinite(g_loc).all() and torch.isfinite(g_kappa).all()


def test_validation_off_never_hangs_on_non_finite_kappa() -> None:
    loc = unit_vector(5).expand(3, 5)
    q = VonMisesFisher(loc, torch.tensor([1.0, math.nan, math.inf], dtype=F64), validate_args=False)
    z = q.sample((10,))
    assert torch.isfinite(z[:, 0]).all() and torch.isnan(z[:, 1]).all()


# ---------------------------------------------------------------------------------------------
# shapes and bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_and_kl() -> None:
    torch.manual_seed(13)
    for m in (3, 11, 65):
        loc = unit_vector(m, dtype=torch.float32).cuda().expand(4096, m)
        kappa = torch.logspace(-3, 4, 4096, device="cuda")
        q = VonMisesFisher(loc, kappa)
        w = q.sample() @ loc[0]
        assert w.device.type == "cuda" and torch.isfinite(w).all()
        a = q.mean_resultant_length
        on_cpu = VonMisesFisher(loc.cpu(), kappa.cpu()).mean_resultant_length
        torch.testing.assert_close(a.cpu(), on_cpu, rtol=1e-5, atol=0)
        kl = kl_divergence(q, HypersphericalUniform(m, dtype=torch.float32, device="cuda"))
        assert torch.isfinite(kl).all()


def test_public_kl_to_uniform_is_the_registered_kl():
    """von_mises_fisher_kl_to_uniform (public, as its siblings' *_kl_to_uniform) is what kl_divergence and the
    method return, and entropy = log|S^(m-1)| - KL."""
    from hsvae.distributions.uniform import HypersphericalUniform
    from hsvae.distributions.von_mises_fisher import von_mises_fisher_kl_to_uniform

    kappa = torch.tensor([0.5, 3.0, 40.0], dtype=torch.float64)
    loc = torch.nn.functional.normalize(torch.randn(3, 6, dtype=torch.float64), dim=-1)
    q = VonMisesFisher(loc, kappa)
    kl = torch.distributions.kl_divergence(q, HypersphericalUniform(6, dtype=torch.float64))
    torch.testing.assert_close(von_mises_fisher_kl_to_uniform(kappa, 6), kl)
    torch.testing.assert_close(q.kl_to_uniform(), kl)
    torch.testing.assert_close(q.entropy(), HypersphericalUniform(6, dtype=torch.float64).entropy() - kl)


def test_expand_keeps_the_m3_sampler_switch() -> None:
    """(Shapes, validation and the shared laws: test_spherical_families.py.)"""
    q3 = VonMisesFisher(unit_vector(3), torch.tensor(2.0, dtype=F64))
    q3._exact_for_m3 = False
    assert q3.expand((2,))._exact_for_m3 is False


def test_bad_concentration_or_loc_without_an_axis() -> None:
    loc = unit_vector(5)
    for kappa in (0.0, -1.0):  # kappa > 0: the uniform is not a vMF here
        with pytest.raises(ValueError, match=r"scale \(kappa\) must be > 0"):
            VonMisesFisher(loc, torch.tensor(kappa, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="loc"):
        VonMisesFisher(torch.tensor(1.0), torch.tensor(1.0))  # no ambient axis
