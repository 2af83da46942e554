"""``python scripts/interpolate.py CKPT``: decode latent paths between pairs of test images of a trained VAE.

For each pair, the path runs between the two images' latent means: the geodesic (slerp) on the sphere for a
spherical latent, the straight line for a Gaussian one; ``--steps`` evenly spaced points are decoded to the
likelihood's mean and drawn as one row of a PNG grid.

    python scripts/interpolate.py logs/latent_comparison/multiruns/<date>/0/checkpoints/best.ckpt \\
        --pairs 8 --steps 10 --out interpolation.png

The run's config is found as everywhere (:func:`hsvae.cli.checkpoints.find_run_config`: ``<run dir>/.hydra/config.yaml``,
else ``<run dir>/results.json``, the run dir being the checkpoint folder's parent); ``--config`` points
elsewhere. ``--data-dir`` replaces the data folder the run used (e.g. on another machine).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, open_dict

from hsvae.cli.checkpoints import find_run_config, load_checkpoint
from hsvae.cli.resume import run_dir_of
from hsvae.cli.stages import instantiate_datamodule
from hsvae.evaluation.interpolation import decode_interpolations
from hsvae.evaluation.protocols import LabelledSplits
from hsvae.utils.plotting import image_grid, save_figure


def run_config(ckpt: Path, config: Path | None = None, data_dir: Path | None = None) -> DictConfig:
    """The training run's config for ``ckpt``, with concrete paths (no Hydra runtime needed)."""
    run_dir = run_dir_of(ckpt)
    cfg, _ = find_run_config(ckpt, config, explicit_key="--config")
    root = Path.cwd()
    resolved_data_dir = data_dir or os.environ.get("HSVAE_DATA_DIR") or root / "data"
    with open_dict(cfg):
        old = cfg.get("paths") or {}
        keep = {k: old[k] for k in ("data_dir", "cache_dir") if isinstance(old.get(k), str) and "${" not in old[k]}
        cfg.paths = {
            "root_dir": str(root),
            "data_dir": str(data_dir) if data_dir else keep.get("data_dir", str(resolved_data_dir)),
            "cache_dir": keep.get("cache_dir", os.environ.get("HSVAE_CACHE_DIR", str(root / ".cache"))),
            "log_dir": str(root / "logs"),
            "output_dir": str(run_dir),
        }
    return cfg


def load_model(ckpt: Path, cfg: DictConfig):
    model = hydra.utils.instantiate(cfg.model)
    model.load_state_dict(load_checkpoint(ckpt)["state_dict"])
    return model.eval()


def choose_pairs(n_images: int, pairs: int, indices: list[int] | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the pairs' first and second images: ``indices`` taken two by two, or random distinct images."""
    if indices:
        if len(indices) % 2:
            raise ValueError(f"--indices needs an even number of image indices (pairs), got {len(indices)}")
        bad = [i for i in indices if not 0 <= i < n_images]
        if bad:
            raise ValueError(f"--indices {bad} outside the split's {n_images} images")
        idx = torch.tensor(indices)
    else:
        if not 1 <= pairs <= n_images // 2:
            raise ValueError(f"--pairs must lie in [1, {n_images // 2}], got {pairs}")
        idx = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))[: 2 * pairs]
    return idx[0::2], idx[1::2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path, help="a checkpoint written by train.py (e.g. <run>/checkpoints/best.ckpt)")
    parser.add_argument("--config", type=Path, default=None, help="the run's results.json or .hydra/config.yaml")
    parser.add_argument("--data-dir", type=Path, default=None, help="the datasets folder (default: the run's)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--pairs", type=int, default=8, help="random pairs of images (rows)")
    parser.add_argument("--indices", type=int, nargs="*", default=None, help="explicit image indices, two per pair")
    parser.add_argument("--steps", type=int, default=10, help="points per path, end points included (columns)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pairs")
    parser.add_argument("--out", type=Path, default=Path("interpolation.png"))
    args = parser.parse_args(argv)

    if not args.ckpt.is_file():
        print(f"error: {args.ckpt} is not a checkpoint file", file=sys.stderr)
        return 2
    cfg = run_config(args.ckpt, args.config, args.data_dir)
    model = load_model(args.ckpt, cfg)
    datamodule = instantiate_datamodule(cfg)
    datamodule.setup()
    splits = datamodule.splits if isinstance(datamodule, LabelledSplits) else {}
    if args.split not in splits or splits[args.split].x.dim() != 4:
        print(f"error: interpolation needs an image dataset; {type(datamodule).__name__} has no {args.split} images",
              file=sys.stderr)
        return 2
    x = splits[args.split].x
    try:
        first, second = choose_pairs(x.shape[0], args.pairs, args.indices, args.seed)
        images = decode_interpolations(model.net, x[first], x[second], args.steps)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    latent = model.net.latent
    kind = "slerp" if latent.spheres else "straight line"
    title = f"{type(latent).__name__.replace('Latent', '')}, d={latent.dim}: {kind} between {args.split} images"
    fig = image_grid(images.flatten(0, 1), nrow=args.steps, title=title)
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
