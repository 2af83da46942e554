"""The S-VAE paper's synthetic-sphere figure from a finished `experiment=synthetic_sphere` multirun.

Panel (a): the true latent angles of the test points on the circle; then, for each model variant, the
test points' latent means under that run's best checkpoint (the run with the lowest seed).

    python scripts/plot_synthetic_sphere.py logs/synthetic_sphere/multiruns/<date> \\
        --out experiments/synthetic_sphere/latent_spaces.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import _checkout  # noqa: F401,I001  (this checkout's hsvae, not an installed one)
from hsvae.data import make_synthetic_sphere  # noqa: E402
from hsvae.utils.plotting import draw_latent  # noqa: E402
from hsvae.cli.failures import run_script

ORDER = ["autoencoder", "nvae", "nvae_beta01", "svae"]
TITLES = {"autoencoder": "autoencoder", "nvae": "N-VAE", "nvae_beta01": "N-VAE, beta = 0.1", "svae": "S-VAE"}


def variant_runs(sweep_dir: Path) -> dict[str, Path]:
    """variant -> job directory of its lowest-seed finished run."""
    best: dict[str, tuple[int, Path]] = {}
    for results in sweep_dir.glob("*/results.json"):
        overrides = dict(o.split("=", 1) for o in OmegaConf.load(results.parent / ".hydra" / "overrides.yaml"))
        variant, seed = overrides.get("variant"), int(overrides.get("seed", 0))
        if variant and (variant not in best or seed < best[variant][0]):
            best[variant] = (seed, results.parent)
    return {v: d for v, (_, d) in best.items()}


@torch.no_grad()
def embed_test_points(job_dir: Path):
    data = json.loads((job_dir / "results.json").read_text())
    cfg = OmegaConf.create(data["config"])
    model = hydra.utils.instantiate(cfg.model)
    state = torch.load(data["test_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    model.eval()
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    return model.net.embed(dm.splits["test"].x), dm.splits["test"].y, model.net.latent.spherical, dm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("latent_spaces.png"))
    args = parser.parse_args()
    runs = variant_runs(args.sweep_dir)
    if not runs:
        raise SystemExit(f"error: no finished synthetic_sphere runs (results.json with a variant override) in {args.sweep_dir}")
    variants = [v for v in ORDER if v in runs] + sorted(set(runs) - set(ORDER))
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(3.3 * (len(variants) + 1), 3.6))
    first = None
    for ax, variant in zip(axes[1:], variants):
        points, labels, spherical, dm = embed_test_points(runs[variant])
        draw_latent(ax, points, labels, spherical, TITLES.get(variant, variant))
        first = first or dm
    # (a) the generating latent: the same test points' true angles (same sizes and data seed as the runs)
    total = sum(first.sizes.values())
    _, labels, angles = make_synthetic_sphere(total, **first.kwargs)
    test = slice(total - first.sizes["test"], total)
    truth = torch.stack([angles[test].cos(), angles[test].sin()], -1)
    draw_latent(axes[0], truth, labels[test], True, "original (S^1)")
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None and ax is not axes[-1]:
            legend.remove()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
