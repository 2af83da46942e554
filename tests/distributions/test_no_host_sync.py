"""The accelerator path of the samplers and KLs reads nothing back to the host.

Dimension convention: m is the ambient dimension (the sphere S^(m-1) in R^m).

CI has no GPU, so ``torch.cuda.set_sync_debug_mode("error")`` cannot run there (the CUDA test in
test_von_mises_fisher.py and ``scripts/bench_distributions.py --device cuda`` do that where a GPU
exists). The "meta" device is the CPU stand-in: its tensors have shapes but no data, so every
host read -- ``.item()``, ``bool(tensor)``, ``nonzero``, boolean-mask indexing, a data-dependent
loop -- raises, while the code takes the same branches as on CUDA (everything but ``device.type ==
"cpu"``). A training step (rsample, KL to the uniform, backward) that completes on meta tensors
therefore has no host synchronisation.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from hsvae.distributions import HypersphericalUniform, PowerSpherical, SphericalCauchy, VonMisesFisher

META = torch.device("meta")


def _step(family, m: int, scale: float, correction: bool = False) -> torch.Tensor:
    loc = torch.randn(1024, m, device=META, requires_grad=True)
    scale_t = torch.full((1024, 1), scale, device=META, requires_grad=True)
    q = family(loc, scale_t, validate_args=False)
    p = HypersphericalUniform(m, device=META, validate_args=False)
    if correction:
        z, corr = q.rsample_with_correction()
        f = z.sum(-1)
        loss = (f + f.detach() * corr).sum()
    else:
        loss = q.rsample().sum()
    (loss + kl_divergence(q, p).sum()).backward()
    assert loc.grad.shape == loc.shape and scale_t.grad.shape == scale_t.shape
    return loc.grad


@pytest.mark.parametrize("m", [3, 11, 65, 257])
@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4])
@pytest.mark.parametrize("correction", [False, True])
def test_von_mises_fisher_step_has_no_host_sync(m, kappa, correction):
    _step(VonMisesFisher, m, kappa, correction)


@pytest.mark.parametrize("m", [3, 11, 65, 257])
def test_spherical_cauchy_step_has_no_host_sync(m):
    _step(SphericalCauchy, m, 0.5)


@pytest.mark.parametrize("m", [3, 11])
def test_power_spherical_step_has_no_host_sync(m):
    """Odd m <= 33 (the Gamma-free sampler); torch's Gamma gradient has no meta kernel to test the rest."""
    _step(PowerSpherical, m, 10.0)


def test_the_meta_device_detects_host_reads():
    """The detector works: validation reads values back (bool of a tensor), which raises on meta."""
    loc = torch.randn(8, 5, device=META)
    with pytest.raises(RuntimeError, match="meta"):
        VonMisesFisher(loc, torch.ones(8, device=META), validate_args=True)
    with pytest.raises(RuntimeError, match="meta"):
        bool((loc > 0).any())
