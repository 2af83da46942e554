"""Benchmark: K runs trained as one stacked computation against K separate runs, in one process.

Two models, on random data of the papers' sizes (the data do not enter the cost):

* ``mlp_vae``: the S-VAE paper's MNIST MLP VAE (784-256-128, batch 64) with a ``--latent`` family at d = ``--dim``;
* ``vgae``: the VGAE on a random graph of Cora's size (2708 nodes, 1433 bag-of-words features at Cora's 1.3%
  density, 5278 edges; hidden 32, d = 16, Kipf's all-pairs loss), each member on its own edge split.

For K in ``--stacks`` (default 1 4 10): the throughput in member-steps per second of one stack of K members
(hsvae.models.stacked / stacked_vgae: each member's draws from its own random stream, Adam fused as a stack
trains) against K separate models stepped one after another, as K separate runs train (Adam as the configs
build it), and their ratio (target on CPU: the stack no slower, ratio >= 1; on a GPU, K = 10 at least 5x). The
separate models with the fused Adam are shown too (``separate/fused``): the share of the gain that is the
optimiser's. The variants are interleaved in ``--rounds`` rounds; medians over rounds.

With ``--compile`` the MLP VAE stack runs its networks compiled, as ``compile=true`` does (``StackedVAE.
compile_networks``: CUDA graphs, ``mode="reduce-overhead"``, on a GPU; inductor on the CPU); the VGAE stack has no
compiled form.

    python scripts/bench_stacked.py [--models mlp_vae vgae] [--latent vmf] [--stacks 1 4 10] [--device cpu|cuda]
                                    [--compile]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.registry import build_latent, latent_families
from hsvae.data.links import split_edges
from hsvae.models import VAE, VGAE, BernoulliLikelihood, MLPDecoder, MLPEncoder
from hsvae.models.stacked import MemberStreams, StackedVAE
from hsvae.models.stacked_vgae import StackedVGAE, block_diagonal_adjacency
from hsvae.models.vgae import encoder_features, gcn_normalized_adjacency
from hsvae.training.stacked import single_pass_adam
from hsvae.utils.modules import configure_compile
from hsvae.cli.failures import run_script

Step = Callable[[], None]
CORA_NODES, CORA_FEATURES, CORA_EDGES, CORA_DENSITY = 2708, 1433, 5278, 0.0127


def _adam(fused: bool) -> Callable[..., torch.optim.Optimizer]:
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    return single_pass_adam(adam) if fused else adam


def _streams(k: int, device: torch.device) -> MemberStreams:
    return MemberStreams([torch.get_rng_state()] * k, [torch.cuda.get_rng_state()] * k if device.type == "cuda" else None)


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# -- the MNIST MLP VAE --------------------------------------------------------------------------------------------


def _vae(args, seed: int, device: torch.device) -> VAE:
    torch.manual_seed(seed)
    return VAE(MLPEncoder(784, (256, 128)), functools.partial(MLPDecoder, out_features=784, hidden=(128, 256)),
               build_latent(args.latent, args.dim), BernoulliLikelihood()).to(device)


def mlp_vae_steps(args, k: int, device: torch.device) -> dict[str, Step]:
    images = torch.rand(k, args.batch, 784, device=device)

    def separate(fused: bool) -> Step:
        nets = [_vae(args, seed, device) for seed in range(k)]
        optimizers = [_adam(fused)(params=n.parameters()) for n in nets]

        def step() -> None:
            for i, (net, optimizer) in enumerate(zip(nets, optimizers)):
                _descend(optimizer, net(torch.bernoulli(images[i])).loss())

        return step

    stack = StackedVAE([_vae(args, seed, device) for seed in range(k)], _streams(k, device))
    if args.compile:
        configure_compile()
        stack.compile_networks(mode="reduce-overhead" if device.type == "cuda" else "default")
    optimizer = _adam(True)(params=stack.parameters())

    def stacked() -> None:
        batches = []
        for i in range(k):
            with stack.streams.member(i):
                batches.append(torch.bernoulli(images[i]))
        _descend(optimizer, stack(torch.stack(batches)).loss())

    return {"separate": separate(False), "separate/fused": separate(True), "stacked": stacked}


# -- the VGAE -------------------------------------------------------------------------------------------------------


def vgae_steps(args, k: int, device: torch.device) -> dict[str, Step]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(CORA_NODES, CORA_FEATURES, generator=g) < CORA_DENSITY).float()
    edges = torch.randint(CORA_NODES, (2, CORA_EDGES), generator=g)
    splits = [split_edges(x, torch.zeros(CORA_NODES, dtype=torch.long), edges, seed=s).to(device) for s in range(k)]
    features = encoder_features(x.to(device))

    def build(seed: int) -> VGAE:
        torch.manual_seed(seed)
        return VGAE(CORA_FEATURES, build_latent(args.latent, 16)).to(device)

    def separate(fused: bool) -> Step:
        nets = [build(seed) for seed in range(k)]
        optimizers = [_adam(fused)(params=n.parameters()) for n in nets]
        adjacencies = [gcn_normalized_adjacency(s.message_passing_edges(), CORA_NODES) for s in splits]

        def step() -> None:
            for net, optimizer, adjacency, split in zip(nets, optimizers, adjacencies, splits):
                _descend(optimizer, net(features, adjacency, split.train_pos).loss())

        return step

    stack = StackedVGAE([build(seed) for seed in range(k)], _streams(k, device))
    optimizer = _adam(True)(params=stack.parameters())
    adjacency = block_diagonal_adjacency([s.message_passing_edges() for s in splits], CORA_NODES)
    train_pos = [s.train_pos for s in splits]

    def stacked() -> None:
        _descend(optimizer, torch.stack([t.loss() for t in stack(features, adjacency, train_pos)]).sum())

    return {"separate": separate(False), "separate/fused": separate(True), "stacked": stacked}


MODELS = {"mlp_vae": mlp_vae_steps, "vgae": vgae_steps}


def measure(runs: dict[str, Step], k: int, rounds: int, steps: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median member-steps per second of each run over ``rounds`` interleaved rounds of ``steps`` steps."""
    for step in runs.values():  # warm-up
        step()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, step in runs.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            rates[name].append(k * steps / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--latent", default="vmf", choices=latent_families())
    parser.add_argument("--dim", type=int, default=10, help="intrinsic latent dimension d of the MLP VAE")
    parser.add_argument("--stacks", type=int, nargs="+", default=[1, 4, 10], help="the K to measure")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round (the VGAE: a fifth, at least 1)")
    parser.add_argument("--compile", action="store_true", help="the MLP VAE stack's networks compiled")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.distributions.Distribution.set_default_validate_args(False)  # as in training
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"latent={args.latent}, device={device}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"medians over {args.rounds} rounds" + ("; the MLP VAE stack compiled" if args.compile else ""))
    for model in args.models:
        steps = args.steps if model == "mlp_vae" else max(1, args.steps // 5)
        what = f"MNIST MLP VAE d={args.dim}, batch {args.batch}" if model == "mlp_vae" else \
            "VGAE on a Cora-sized graph, d=16, all pairs"
        print(f"\n{what}: member-steps/s ({steps} steps per round)")
        print(f"{'K':>4}{'separate':>12}{'separate/fused':>16}{'stacked':>10}{'stacked/separate':>18}"
              f"{'stacked/separate-fused':>24}")
        for k in args.stacks:
            rates = measure(MODELS[model](args, k, device), k, args.rounds, steps, sync)
            separate, fused, stacked = rates["separate"], rates["separate/fused"], rates["stacked"]
            print(f"{k:>4}{separate:>12.1f}{fused:>16.1f}{stacked:>10.1f}{stacked / separate:>17.2f}x"
                  f"{stacked / fused:>23.2f}x")


if __name__ == "__main__":
    run_script(main)
