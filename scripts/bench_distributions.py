"""Benchmark: rsample + KL to the prior, forward and backward, per latent family.

Each family is timed on a batch of ``--batch`` (default 1024) posteriors at ambient dimensions
m in ``--dims`` (default 3 5 11 65 257), and reported as a ratio to the Gaussian measured in the
same process. The Gaussian has d = m - 1 coordinates: the same intrinsic latent dimension as the
sphere S^(m-1) in R^m (a spherical latent with m coordinates is what a d = m - 1 Gaussian is
compared with in the papers). One timed step is

    q = Family(loc, scale, validate_args=False); p = prior (built inside the step, as in training)
    z = q.rsample(); kl = kl_divergence(q, p); (z.sum() + kl.sum()).backward()

with leaf parameters that require gradients (validation off, float32 by default). Families are
interleaved in rounds of ``--inner`` steps; times are medians over ``--rounds`` rounds and each
ratio is the median of the per-round ratios (robust to a shared, noisy machine).
Targets (CPU, issue 26): spherical Cauchy and Power Spherical <= 1.5x the Gaussian, vMF <= 2x (kappa 10 and 1000).

Peers: where their published code is importable, the same step of s-vae-pytorch's VonMisesFisher (the S-VAE
authors' ``hyperspherical_vae`` package, KL to its HypersphericalUniform) and of the ``power_spherical`` package's
PowerSpherical (KL to its HypersphericalUniform), interleaved with ours in the same rounds; "peer / ours" is
their time over ours (above 1: ours is faster). Neither is a dependency of hsvae: put them on PYTHONPATH
(``pip install --target <dir> power_spherical``; a clone of github.com/nicola-decao/s-vae-pytorch); a peer
that is not importable is skipped with a note.
The compiled column times the same step with the loss (rsample + KL) under
``torch.compile(fullgraph=True)`` (inductor, drawing with torch's generator as ``compile=true`` does; the vMF's
sampler then draws a fixed number of proposals per row, as on an accelerator), interleaved with the eager steps; "vs eager" is compiled time over eager time
(below 1: the compiled step is faster). The compilation itself happens in the warm-up and is not timed.
``--device cuda`` also runs the vMF step (and the spherical Cauchy and Power Spherical steps)
under ``torch.cuda.set_sync_debug_mode("error")`` (no host-device synchronisation allowed) and
reports whether each passed. On a shared CPU machine, ``--clock cpu`` (process CPU time)
ignores time spent preempted.

    python scripts/bench_distributions.py [--threads 1] [--device cpu|cuda] [--clock wall|cpu] [--no-compile] [--no-peers]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributions import kl_divergence

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.utils.modules import configure_compile
from hsvae.cli.failures import run_script
from hsvae.distributions import (
    DiagonalNormal,
    HypersphericalUniform,
    PowerSpherical,
    SphericalCauchy,
    StandardNormal,
)

TARGETS = {"spherical Cauchy": 1.5, "Power Spherical": 1.5, "vMF": 2.0}
#: the vMF's concentrations in the table (and the peers' comparison)
VMF_KAPPAS = (10.0, 1000.0)


def _time_rounds(
    steps: list[Callable[[], None]],
    rounds: int,
    inner: int,
    warmup: int,
    device: torch.device,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Seconds per step for every step in every round.

    The families are interleaved within each round (``inner`` steps each), so that a slow
    patch of a shared machine hits all of them alike; ratios are then taken round by round.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps:
        for _ in range(warmup):
            step()
    sync()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(rounds):
        for i, step in enumerate(steps):
            start = clock()
            for _ in range(inner):
                step()
            sync()
            times[i].append((clock() - start) / inner)
    return times


def _unit_leaf(batch: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    loc = torch.randn(batch, m, dtype=dtype, device=device)
    return (loc / loc.norm(dim=-1, keepdim=True)).requires_grad_()


def gaussian_loss(batch: int, m: int, dtype: torch.dtype, device: torch.device):
    """The Gaussian's step loss and its leaf parameters (d = m - 1)."""
    d = m - 1
    loc = torch.randn(batch, d, dtype=dtype, device=device, requires_grad=True)
    scale = torch.rand(batch, d, dtype=dtype, device=device).add_(0.1).requires_grad_()

    def loss(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q = DiagonalNormal(loc, scale, validate_args=False)
        p = StandardNormal(d, dtype=dtype, device=device, validate_args=False)
        return q.rsample().sum() + kl_divergence(q, p).sum()

    return loss, (loc, scale)


def spherical_loss(family, batch: int, m: int, scale_value: float | None, dtype, device):
    """A spherical family's step loss and its leaf parameters."""
    loc = _unit_leaf(batch, m, dtype, device)
    if scale_value is None:  # spherical Cauchy: rho spread over (0, 0.99)
        scale = torch.rand(batch, 1, dtype=dtype, device=device).mul_(0.99)
    else:
        scale = torch.full((batch, 1), scale_value, dtype=dtype, device=device)
    scale.requires_grad_()

    def loss(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q = family(loc, scale, validate_args=False)
        p = HypersphericalUniform(m, dtype=dtype, device=device, validate_args=False)
        return q.rsample().sum() + kl_divergence(q, p).sum()

    return loss, (loc, scale)


def timed_step(loss, params, compiled: bool) -> Callable[[], None]:
    """One timed step: the loss and its backward, eager or with the loss under torch.compile(fullgraph=True)
    (a graph break would raise). Compiled code draws its noise with torch's own generator, as train.py's
    compile=true does (inductor's generated random numbers cost about 3x the whole step on the CPU)."""
    fn = torch.compile(loss, fullgraph=True) if compiled else loss

    def step() -> None:
        fn(*params).backward()

    return step


def spherical_step(family, batch: int, m: int, scale_value: float | None, dtype, device) -> Callable[[], None]:
    return timed_step(*spherical_loss(family, batch, m, scale_value, dtype, device), compiled=False)


def _load_vmf():
    try:
        from hsvae.distributions import VonMisesFisher  # noqa: PLC0415 -- optional, built separately
    except ImportError as err:
        return None, str(err)
    return VonMisesFisher, ""


def _load_peers() -> tuple[dict[str, tuple], list[str]]:
    """The peers' published code, where importable: name -> (their distribution class, their uniform's factory of m,
    our class's name in the table); and the notes for those that are not."""
    peers, notes = {}, []
    try:
        from hyperspherical_vae.distributions import HypersphericalUniform as SvaeUniform  # noqa: PLC0415
        from hyperspherical_vae.distributions import VonMisesFisher as SvaeVMF  # noqa: PLC0415
        peers["s-vae-pytorch vMF"] = (SvaeVMF, lambda m, dtype, device: SvaeUniform(m - 1, device=device), "vMF")
    except ImportError as err:
        notes.append(f"s-vae-pytorch skipped: not importable ({err}); clone github.com/nicola-decao/s-vae-pytorch "
                     "onto PYTHONPATH")
    try:
        from power_spherical import HypersphericalUniform as PsUniform  # noqa: PLC0415
        from power_spherical import PowerSpherical as PsPowerSpherical  # noqa: PLC0415
        peers["power_spherical PS"] = (PsPowerSpherical, lambda m, dtype, device: PsUniform(m, device=device),
                                       "Power Spherical")
    except ImportError as err:
        notes.append(f"power_spherical skipped: not importable ({err}); pip install --target <dir> power_spherical")
    return peers, notes


def peer_loss(family, uniform, batch: int, m: int, scale_value: float, dtype, device, squeeze: bool):
    """A peer's step loss (rsample + KL to its own uniform), with the same leaves as :func:`spherical_loss`."""
    loc = _unit_leaf(batch, m, dtype, device)
    scale = torch.full((batch,) if squeeze else (batch, 1), scale_value, dtype=dtype, device=device).requires_grad_()

    def loss(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        q = family(loc, scale)
        return q.rsample().sum() + kl_divergence(q, uniform(m, dtype, device)).sum()

    return loss, (loc, scale)


def compare_peers(args, dtype, device, clock, vmf) -> None:
    """Our step against each importable peer's, interleaved, at every m and the vMF's kappas."""
    peers, notes = _load_peers()
    for note in notes:
        print(note)
    if not peers:
        return
    print(f"{'peer':<28}{'m':>6}{'kappa':>8}{'peer':>14}{'ours':>14}{'peer / ours':>13}")
    ours = {"vMF": vmf, "Power Spherical": PowerSpherical}
    for m in args.dims:
        for kappa in VMF_KAPPAS:
            for name, (family, uniform, our_name) in peers.items():
                if ours.get(our_name) is None:
                    continue
                squeeze = our_name == "Power Spherical"  # power_spherical takes a (B,) scale, s-vae a (B, 1) one
                theirs = timed_step(*peer_loss(family, uniform, args.batch, m, kappa, dtype, device, squeeze), False)
                mine = spherical_step(ours[our_name], args.batch, m, kappa, dtype, device)
                times = _time_rounds([theirs, mine], max(5, args.rounds // 4), args.inner, args.warmup, device, clock)
                ratio = statistics.median(t / o for t, o in zip(times[0], times[1]))
                print(f"{name:<28}{m:>6}{kappa:>8g}{statistics.median(times[0]) * 1e6:>11.1f} us"
                      f"{statistics.median(times[1]) * 1e6:>11.1f} us{ratio:>12.2f}x")
    print()


def _sync_debug_check(family, batch: int, m: int, scales, dtype, device) -> str:
    """Run the step under torch.cuda.set_sync_debug_mode("error"): any host-device sync raises."""
    steps = [spherical_step(family, batch, m, scale, dtype, device) for scale in scales]
    for step in steps:  # warm-up outside the check: lazily built constants may be copied to the device
        step()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in steps:
            step()
        result = "passed"
    except RuntimeError as err:
        result = f"FAILED ({str(err).splitlines()[0][:120]})"
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 5, 11, 65, 257], help="ambient dimensions m")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (median over rounds)")
    parser.add_argument("--inner", type=int, default=10, help="steps per family per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip the comparison with the peers' published code (s-vae-pytorch, power_spherical)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the compiled column (each step also under torch.compile(fullgraph=True))")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time, the process's CPU time (CPU runs only), "
        "which ignores time spent preempted on a busy shared machine",
    )
    args = parser.parse_args()
    configure_compile()  # as train.py's compile=true (see timed_step)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures host CPU time; use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    vmf, vmf_error = _load_vmf()
    print(
        f"batch={args.batch} device={device} dtype={args.dtype} threads={torch.get_num_threads()} "
        f"torch={torch.__version__}; Gaussian with d = m - 1; {args.clock} clock; medians over {args.rounds} "
        f"interleaved rounds of {args.inner} steps after {args.warmup} warm-up steps"
    )
    if vmf is None:
        print(f"vMF rows skipped: VonMisesFisher is not importable ({vmf_error})")
    compile_header = f"{'compiled':>14}{'vs eager':>10}" if args.compile else ""
    print(f"{'family':<28}{'m':>6}{'time/step':>14}{'ratio':>9}{'target':>9}{compile_header}")
    for m in args.dims:
        rows = [
            ("Gaussian (d = m - 1)", gaussian_loss(args.batch, m, dtype, device)),
            ("spherical Cauchy", spherical_loss(SphericalCauchy, args.batch, m, None, dtype, device)),
            ("Power Spherical", spherical_loss(PowerSpherical, args.batch, m, 10.0, dtype, device)),
        ]
        if vmf is not None:
            rows += [(f"vMF kappa={k:g}", spherical_loss(vmf, args.batch, m, k, dtype, device)) for k in VMF_KAPPAS]
        # (the spherical steps share one loss function's code: dynamo keeps a compiled version per family and
        # dimension, and would stop recompiling at its limit; those of the previous dimension are done with)
        torch._dynamo.reset()
        eager = [timed_step(loss, params, compiled=False) for _, (loss, params) in rows]
        compiled = [timed_step(loss, params, compiled=True) for _, (loss, params) in rows] if args.compile else []
        # eager and compiled steps interleaved in the same rounds (the compilation happens in the warm-up)
        times = _time_rounds(eager + compiled, args.rounds, args.inner, args.warmup, device, clock)
        for i, (name, _) in enumerate(rows):
            family_times = times[i]
            seconds = statistics.median(family_times)
            ratio = statistics.median(t / g for t, g in zip(family_times, times[0]))
            target = TARGETS.get(name.split(" kappa")[0])
            verdict = "" if target is None else ("ok" if ratio <= target else "OVER")
            target_text = "-" if target is None else f"<= {target:g}"
            compiled_text = ""
            if args.compile:
                compiled_times = times[len(rows) + i]
                speedup = statistics.median(c / e for c, e in zip(compiled_times, family_times))
                compiled_text = f"{statistics.median(compiled_times) * 1e6:>11.1f} us{speedup:>9.2f}x"
            print(f"{name:<28}{m:>6}{seconds * 1e6:>11.1f} us{ratio:>8.2f}x{target_text:>9}{compiled_text}  {verdict}")
        print()
    if args.peers:
        compare_peers(args, dtype, device, clock, vmf)
    if device.type == "cuda":
        checks = [("spherical Cauchy", SphericalCauchy, (None,)), ("Power Spherical", PowerSpherical, (10.0,))]
        if vmf is not None:
            checks.insert(0, ("vMF (kappa = 1, 1e2, 1e4)", vmf, (1.0, 1e2, 1e4)))
        for name, family, scales in checks:
            result = _sync_debug_check(family, args.batch, 65, scales, dtype, device)
            print(f"{name} step under torch.cuda.set_sync_debug_mode('error'), m = 65: {result}")


if __name__ == "__main__":
    run_script(main)
