"""Benchmark: K VAEs trained as one stacked computation against K separate runs, in one process.

The S-VAE paper's MNIST MLP VAE (784-256-128, batch 64, Adam) with a ``--latent`` family at d = ``--dim``, on
random binary images (the data do not enter the cost). For K in ``--stacks`` (default 1 4 10): the throughput in
member-steps per second of one ``StackedVAE`` of K members (hsvae.models.stacked: networks under vmap, each
member's draws from its own random stream) against K separate models stepped one after another (what K separate
runs do), and their ratio (target on CPU: the stack no slower, ratio >= 1; on a GPU, K = 10 at least 5x).
The two are interleaved in ``--rounds`` rounds; medians over rounds.

    python scripts/bench_stacked.py [--latent vmf] [--stacks 1 4 10] [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.registry import build_latent, latent_families
from hsvae.models import VAE, BernoulliLikelihood, MLPDecoder, MLPEncoder
from hsvae.models.stacked import MemberStreams, StackedVAE


def build(latent: str, dim: int, seed: int, device: torch.device) -> VAE:
    torch.manual_seed(seed)
    return VAE(MLPEncoder(784, (256, 128)), functools.partial(MLPDecoder, out_features=784, hidden=(128, 256)),
               build_latent(latent, dim), BernoulliLikelihood()).to(device)


def separate_steps(nets: list[VAE], batch: int, device: torch.device):
    optimizers = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    images = torch.rand(batch, 784, device=device)

    def step() -> None:
        for net, optimizer in zip(nets, optimizers):
            loss = net(torch.bernoulli(images)).loss()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def stacked_step(stack: StackedVAE, batch: int, device: torch.device):
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-3)
    images = torch.rand(stack.k, batch, 784, device=device)

    def step() -> None:
        batches = []
        for i in range(stack.k):
            with stack.streams.member(i):
                batches.append(torch.bernoulli(images[i]))
        loss = stack(torch.stack(batches)).loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", default="vmf", choices=latent_families())
    parser.add_argument("--dim", type=int, default=10, help="intrinsic latent dimension d")
    parser.add_argument("--stacks", type=int, nargs="+", default=[1, 4, 10], help="the K to measure")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(False)  # as in training
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"MNIST MLP VAE, latent={args.latent} d={args.dim}, batch {args.batch}, device={device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians over {args.rounds} rounds of "
          f"{args.steps} steps")
    print(f"{'K':>4}{'separate member-steps/s':>26}{'stacked member-steps/s':>25}{'ratio':>9}")
    for k in args.stacks:
        nets = [build(args.latent, args.dim, seed, device) for seed in range(k)]
        members = [build(args.latent, args.dim, seed, device) for seed in range(k)]
        cuda_states = [torch.cuda.get_rng_state()] * k if device.type == "cuda" else None
        stack = StackedVAE(members, MemberStreams([torch.get_rng_state()] * k, cuda_states))
        runs = {"separate": separate_steps(nets, args.batch, device), "stacked": stacked_step(stack, args.batch, device)}
        for step in runs.values():  # warm-up
            step()
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, step in runs.items():
                sync()
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync()
                rates[name].append(k * args.steps / (time.perf_counter() - start))
        separate, stacked = statistics.median(rates["separate"]), statistics.median(rates["stacked"])
        print(f"{k:>4}{separate:>26.1f}{stacked:>25.1f}{stacked / separate:>8.2f}x")


if __name__ == "__main__":
    main()
