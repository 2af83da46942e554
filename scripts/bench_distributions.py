"""Benchmark: rsample + KL to the prior, forward and backward, per latent family.

Each family is timed on a batch of ``--batch`` (default 1024) posteriors at ambient dimensions
m in ``--dims`` (default 3 11 65 257), and reported as a ratio to the Gaussian measured in the
same process. The Gaussian has d = m - 1 coordinates: the same intrinsic latent dimension as the
sphere S^(m-1) in R^m (a spherical latent with m coordinates is what a d = m - 1 Gaussian is
compared with in the papers). One timed step is

    q = Family(loc, scale, validate_args=False); p = prior (built inside the step, as in training)
    z = q.rsample(); kl = kl_divergence(q, p); (z.sum() + kl.sum()).backward()

with leaf parameters that require gradients; the figure is the median over ``--repeats`` steps
after ``--warmup`` steps. Targets (CPU): spherical Cauchy and Power Spherical <= 1.5x the
Gaussian, vMF <= 3x. ``--device cuda`` also runs the vMF step once under
``torch.cuda.set_sync_debug_mode("error")`` (no host-device synchronisation allowed) and reports
whether it passed.

    python scripts/bench_distributions.py [--threads 1] [--device cpu|cuda] [--dims 3 11 65 257]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributions import kl_divergence

from hsvae.distributions import (
    DiagonalNormal,
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    StandardNormal,
)

TARGETS = {"spherical Cauchy": 1.5, "Power Spherical": 1.5, "vMF": 3.0}


def _time(step: Callable[[], None], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``step`` in seconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _unit_leaf(batch: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    loc = torch.randn(batch, m, dtype=dtype, device=device)
    return (loc / loc.norm(dim=-1, keepdim=True)).requires_grad_()


def gaussian_step(batch: int, m: int, dtype: torch.dtype, device: torch.device) -> Callable[[], None]:
    d = m - 1
    loc = torch.randn(batch, d, dtype=dtype, device=device, requires_grad=True)
    scale = torch.rand(batch, d, dtype=dtype, device=device).add_(0.1).requires_grad_()

    def step() -> None:
        q = DiagonalNormal(loc, scale, validate_args=False)
        p = StandardNormal(d, dtype=dtype, device=device, validate_args=False)
        z = q.rsample()
        (z.sum() + kl_divergence(q, p).sum()).backward()

    return step


def spherical_step(family, batch: int, m: int, scale_value: float | None, dtype, device) -> Callable[[], None]:
    loc = _unit_leaf(batch, m, dtype, device)
    if scale_value is None:  # spherical Cauchy: rho spread over (0, 0.99)
        scale = torch.rand(batch, 1, dtype=dtype, device=device).mul_(0.99)
    else:
        scale = torch.full((batch, 1), scale_value, dtype=dtype, device=device)
    scale.requires_grad_()

    def step() -> None:
        q = family(loc, scale, validate_args=False)
        p = HypersphericalUniform(m, dtype=dtype, device=device, validate_args=False)
        z = q.rsample()
        (z.sum() + kl_divergence(q, p).sum()).backward()

    return step


def _load_vmf():
    try:
        from hsvae.distributions import VonMisesFisher  # noqa: PLC0415 -- optional, built separately
    except ImportError as err:
        return None, str(err)
    return VonMisesFisher, ""


def _sync_debug_check(vmf, batch: int, m: int, dtype, device) -> str:
    step = spherical_step(vmf, batch, m, 10.0, dtype, device)
    step()  # allocate/caches outside the check
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for kappa in (1.0, 1e2, 1e4):
            spherical_step(vmf, batch, m, kappa, dtype, device)()
        result = "passed"
    except RuntimeError as err:
        result = f"FAILED ({str(err).splitlines()[0][:120]})"
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 11, 65, 257], help="ambient dimensions m")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    vmf, vmf_error = _load_vmf()
    print(
        f"batch={args.batch} device={device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"torch={torch.__version__}; Gaussian with d = m - 1; median of {args.repeats} steps after {args.warmup}"
    )
    if vmf is None:
        print(f"vMF rows skipped: VonMisesFisher is not importable ({vmf_error})")
    print(f"{'family':<28}{'m':>6}{'time/step':>14}{'ratio':>9}{'target':>9}  ")
    for m in args.dims:
        rows: list[tuple[str, Callable[[], None]]] = [
            ("Gaussian (d = m - 1)", gaussian_step(args.batch, m, dtype, device)),
            ("spherical Cauchy", spherical_step(SphericalCauchy, args.batch, m, None, dtype, device)),
            ("Power Spherical", spherical_step(PowerSpherical, args.batch, m, 10.0, dtype, device)),
        ]
        if vmf is not None:
            rows += [(f"vMF kappa={k:g}", spherical_step(vmf, args.batch, m, k, dtype, device)) for k in (1.0, 1e2, 1e4)]
        base = None
        for name, step in rows:
            seconds = _time(step, args.repeats, args.warmup, device)
            base = base or seconds
            ratio = seconds / base
            target = TARGETS.get(name.split(" kappa")[0])
            verdict = "" if target is None else ("ok" if ratio <= target else "OVER")
            target_text = "-" if target is None else f"<= {target:g}"
            print(f"{name:<28}{m:>6}{seconds * 1e6:>11.1f} us{ratio:>8.2f}x{target_text:>9}  {verdict}")
        print()
    if vmf is not None and device.type == "cuda":
        print(f"vMF under torch.cuda.set_sync_debug_mode('error'): {_sync_debug_check(vmf, args.batch, 65, dtype, device)}")


if __name__ == "__main__":
    main()
