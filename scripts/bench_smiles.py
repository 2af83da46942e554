"""Timings of the SMILES pipeline, to budget `experiment=smiles` runs on a machine.

    python scripts/bench_smiles.py                       # data only (about 2 s on a laptop CPU)
    python scripts/bench_smiles.py --steps 20 --device cuda

Prints: loading and tokenising ZINC250k (the data module's setup), decoding the whole training split, and with
``--steps``: training steps of the paper-size model (embedding 256, 4 heads, 4 + 4 layers, batch 256) and greedy
generation from the prior, extrapolated to an epoch and to the 300 epochs of the protocol.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.cli.registry import build_latent, latent_families
from hsvae.cli.failures import run_script


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HSVAE_DATA_DIR", "data")) / "zinc250k"
                        / "250k_rndm_zinc_drugs_clean.smi.gz")
    parser.add_argument("--steps", type=int, default=0, help="training steps to time (0: data only)")
    parser.add_argument("--latent", default="spcauchy", choices=latent_families())
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=256, help="prior samples to generate (with --steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from hsvae.data import SMILESDataModule

    t = time.perf_counter()
    dm = SMILESDataModule(args.data, batch_size=args.batch_size)
    dm.setup()
    print(f"data setup (read, split, tokenise {sum(map(len, dm.smiles.values()))} SMILES): {time.perf_counter() - t:.2f} s; "
          f"vocabulary {dm.tokenizer.vocab_size}, max length {dm.max_length}")
    t = time.perf_counter()
    assert dm.tokenizer.decode_batch(dm.splits["train"].x) == dm.smiles["train"]
    print(f"decode the training split ({len(dm.smiles['train'])} strings): {time.perf_counter() - t:.2f} s")
    if args.steps <= 0:
        return

    from hsvae.models import SMILESVAE

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = SMILESVAE(build_latent(args.latent, args.dim), dm.tokenizer.vocab_size, dm.max_length).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    loader = iter(dm.train_dataloader())
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        x, lengths = next(loader)
        x = x[:, : int(lengths.max())].long().to(device)
        start = clock(device)
        optimizer.zero_grad()
        net(x).loss(0.015).backward()
        optimizer.step()
        if step:
            times.append(clock(device) - start)
    per_step = sum(times) / len(times)
    steps_per_epoch = len(dm.train_dataloader())
    print(f"training step ({args.latent}-{args.dim}, batch {args.batch_size}, {device}): {per_step * 1e3:.0f} ms; "
          f"epoch ({steps_per_epoch} steps) ~ {per_step * steps_per_epoch / 60:.1f} min; "
          f"300 epochs ~ {per_step * steps_per_epoch * 300 / 3600:.1f} h (validation not included)")
    net.eval()
    z = net.latent.prior().sample((args.samples,))
    start = clock(device)
    net.generate(z)
    print(f"greedy generation of {args.samples} strings: {clock(device) - start:.2f} s")


if __name__ == "__main__":
    run_script(main)
