"""Benchmark: one MNIST training epoch per latent family, framework vs. a plain PyTorch loop.

Both run the same VAE (the S-VAE paper's MLP), the same in-memory data, batch size, dynamic
binarisation and Adam optimiser, in this one process; the framework's epoch is timed from a callback
(epoch start to epoch end, no validation), the plain loop with ``time.perf_counter``. Printed: seconds
per epoch for each, and their ratio (target: at most 1.2 on CPU). With ``--compile``, also the framework
with ``compile=true`` (the VAE's forward pass under ``torch.compile``, as train.py does it; the first epoch,
which pays the compilation, is not timed) and its ratio to the eager framework.

    python scripts/bench_training.py --data-dir ../shared/data [--latents gaussian vmf] [--batches 200] [--compile]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import pytorch_lightning as pl
import torch

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.registry import build_latent, latent_families
from hsvae.data import MNISTDataModule
from hsvae.models import VAE, BernoulliLikelihood, MLPDecoder, MLPEncoder
from hsvae.training import VAEModule
from hsvae.utils.modules import configure_compile
from hsvae.cli.failures import run_script

LATENTS = latent_families()


def build_net(latent: str, dim: int) -> VAE:
    from functools import partial

    return VAE(
        MLPEncoder(784, (256, 128)),
        partial(MLPDecoder, out_features=784, hidden=(128, 256)),
        build_latent(latent, dim),
        BernoulliLikelihood(),
    )


#: the clock: wall time, or this process's CPU time (robust on a shared machine when using one thread)
CLOCK = time.perf_counter


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = CLOCK()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(CLOCK() - self._start)


def framework_epoch(dm: MNISTDataModule, latent: str, dim: int, batches: int, epochs: int,
                    compile: bool = False) -> float:
    torch.manual_seed(0)
    module = VAEModule(build_net(latent, dim), optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
                       warmup_epochs=100)
    if compile:  # as train.py's compile=true
        configure_compile()
        module.net.compile()
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=batches, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    return min(timer.times[1:] or timer.times)  # skip the first (warm-up) epoch


def plain_epoch(dm: MNISTDataModule, latent: str, dim: int, batches: int, epochs: int) -> float:
    torch.manual_seed(0)
    net = build_net(latent, dim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_all = dm.splits["train"].x
    n = x_all.shape[0]
    times = []
    for epoch in range(epochs):
        start = CLOCK()
        order = torch.randperm(n)
        for b in range(batches):
            x = torch.bernoulli(x_all[order[b * dm.batch_size : (b + 1) * dm.batch_size]])
            beta = min(1.0, (epoch + b / batches) / 100)
            loss = net(x).loss(beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(CLOCK() - start)
    return min(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("HSVAE_DATA_DIR", "data"))
    parser.add_argument("--latents", nargs="+", default=LATENTS, choices=LATENTS)
    parser.add_argument("--dim", type=int, default=10, help="intrinsic latent dimension d")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (0: the whole epoch)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed (the fastest after the first is kept)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of both (fastest kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or process CPU time (ignores time preempted on a shared machine)")
    parser.add_argument("--compile", action="store_true", help="also time the framework with compile=true")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    # as in training (train.py's validate_distributions=false), for both loops
    torch.distributions.Distribution.set_default_validate_args(False)
    dm = MNISTDataModule(args.data_dir, batch_size=args.batch_size, download=False)
    dm.setup()
    full = len(dm.train_dataloader())
    batches = args.batches or full
    print(f"MNIST, batch {args.batch_size}, {batches} of {full} batches per epoch, d={args.dim}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock")
    compiled_header = f"{'compiled s':>12}{'compiled/eager':>16}" if args.compile else ""
    print(f"{'latent':<16}{'framework s':>12}{'plain s':>10}{'ratio':>8}{compiled_header}   target <= 1.2")
    for latent in args.latents:
        # Alternate the runs so that machine load drifts affect them alike; keep each one's fastest epoch.
        plain, frame, compiled = float("inf"), float("inf"), float("inf")
        for _ in range(args.repeats):
            plain = min(plain, plain_epoch(dm, latent, args.dim, batches, args.epochs))
            frame = min(frame, framework_epoch(dm, latent, args.dim, batches, args.epochs))
            if args.compile:
                compiled = min(compiled, framework_epoch(dm, latent, args.dim, batches, max(2, args.epochs), True))
        compiled_text = f"{compiled:>12.2f}{compiled / frame:>15.2f}x" if args.compile else ""
        print(f"{latent:<16}{frame:>12.2f}{plain:>10.2f}{frame / plain:>8.2f}{compiled_text}   "
              f"{'ok' if frame / plain <= 1.2 else 'OVER'}")


if __name__ == "__main__":
    run_script(main)
