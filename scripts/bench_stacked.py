"""Benchmark: K runs as one stack (hsvae.stack) against K separate runs, in one process and as K processes.

The S-VAE paper's MNIST MLP VAE (784-256-128, batch 64) with a ``--latent`` family at d = ``--dim``, on random data
(the data do not enter the cost), its training step as a run takes it (``VAEModule.training_step``, backward, the
configured Adam). For K in ``--stacks`` (default 1 4 10), the throughput in member-steps per second of

* ``stack``: one :class:`~hsvae.stack.StackedTask` of K members (the members' rows as one batch);
* ``one process``: K separate tasks stepped one after another in this process;
* ``K processes``: K processes side by side, each stepping one task (as ``-m`` with the joblib launcher runs a
  cell's seeds), timed from the first one's first step to the last one's last;

and the stack's ratio to each. Each process uses ``--threads`` torch threads (1: one CPU thread each, so the K
processes may use up to K cores where the stack uses one). The in-process variants are interleaved in ``--rounds``
rounds; medians over rounds.

    python scripts/bench_stacked.py [--latent vmf] [--stacks 1 4 10] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.failures import run_script
from hsvae.cli.registry import build_latent, latent_families
from hsvae.models import VAE, BernoulliLikelihood, MLPDecoder, MLPEncoder
from hsvae.stack import StackedTask
from hsvae.training import VAEModule

Step = Callable[[], None]


def _task(args, seed: int, device: torch.device) -> VAEModule:
    torch.manual_seed(seed)
    net = VAE(MLPEncoder(784, (256, 128)), functools.partial(MLPDecoder, out_features=784, hidden=(128, 256)),
              build_latent(args.latent, args.dim), BernoulliLikelihood())
    return VAEModule(net, functools.partial(torch.optim.Adam, lr=1e-3)).to(device)


def _stepper(task, batch) -> Step:
    optimizer = task.configure_optimizers()

    def step() -> None:
        loss = task.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _images(args, shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.bernoulli(torch.rand(*shape, 784, device=device)), torch.zeros(shape, device=device)


def _timed(step: Step, steps: int, device: torch.device) -> float:
    step()  # (warm-up: allocations, the first kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _processes(args, k: int) -> float:
    """Member-steps per second of K processes side by side (``--member``), first step to last."""
    command = [sys.executable, __file__, "--member", "--latent", args.latent, "--dim", str(args.dim), "--batch",
               str(args.batch), "--device", args.device, "--threads", str(args.threads), "--steps",
               str(args.steps * args.rounds)]
    procs = [subprocess.Popen([*command, "--seed", str(seed)], stdout=subprocess.PIPE, text=True) for seed in range(k)]
    spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError("a member process failed")
    return k * args.steps * args.rounds / (max(s["end"] for s in spans) - min(s["start"] for s in spans))


def _member(args) -> None:
    """One separate run's steps in this process; prints its first step's and last step's wall-clock times."""
    device = torch.device(args.device)
    step = _stepper(_task(args, args.seed, device), _images(args, (args.batch,), device))
    step()
    start = time.time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"start": start, "end": time.time()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", default="vmf", choices=latent_families())
    parser.add_argument("--dim", type=int, default=10, help="intrinsic latent dimension d")
    parser.add_argument("--stacks", type=int, nargs="+", default=[1, 4, 10], help="the K to measure")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--no-processes", action="store_true", help="skip the K processes")
    parser.add_argument("--member", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(False)  # (as train.py: the checks are for tests)
    if args.member:
        return _member(args)
    device = torch.device(args.device)
    print(f"MNIST MLP VAE, latent {args.latent} d = {args.dim}, batch {args.batch}, {device}, "
          f"{torch.get_num_threads()} thread(s) per process; member-steps/s (median of {args.rounds} rounds)")
    print(f"{'K':>3} {'stack':>9} {'one process':>12} {'K processes':>12} {'stack/one process':>18} "
          f"{'stack/K processes':>18}")
    for k in args.stacks:
        stack = _stepper(StackedTask([_task(args, seed, device) for seed in range(k)]),
                         [_images(args, (args.batch,), device) for _ in range(k)])  # (a stack's batch: its members')
        separate = [_stepper(_task(args, seed, device), _images(args, (args.batch,), device)) for seed in range(k)]
        rates: dict[str, list[float]] = {"stack": [], "one": []}
        for _ in range(args.rounds):
            rates["stack"].append(k * args.steps / _timed(stack, args.steps, device))
            rates["one"].append(k * args.steps / sum(_timed(s, args.steps, device) for s in separate))
        stacked, one = statistics.median(rates["stack"]), statistics.median(rates["one"])
        processes = float("nan") if args.no_processes else _processes(args, k)
        print(f"{k:>3} {stacked:>9.1f} {one:>12.1f} {processes:>12.1f} {stacked / one:>17.2f}x "
              f"{stacked / processes:>17.2f}x", flush=True)


if __name__ == "__main__":
    run_script(main)
