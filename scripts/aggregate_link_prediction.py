"""Aggregate link-prediction runs into a Markdown table beside the S-VAE paper's Table 3.

Reads every ``results.json`` under the given folders (e.g. a multirun's sweep directory), groups the runs by
dataset and latent family, and prints the test AUC and AP (x100) as mean +- standard deviation over the seeds
(sample standard deviation), with the paper's N-VGAE (Gaussian) and S-VGAE (vMF) numbers next to them.

    python scripts/aggregate_link_prediction.py logs/link_prediction/multiruns/<date>
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

#: S-VAE paper (Davidson et al., 2018), Table 3: (AUC, AP)
PAPER = {
    ("cora", "gaussian"): (92.7, 93.2),
    ("citeseer", "gaussian"): (90.3, 91.5),
    ("pubmed", "gaussian"): (97.1, 97.1),
    ("cora", "vmf"): (94.1, 94.1),
    ("citeseer", "vmf"): (94.7, 95.2),
    ("pubmed", "vmf"): (96.0, 96.0),
}
FAMILIES = {
    "GaussianLatent": "gaussian",
    "VonMisesFisherLatent": "vmf",
    "SphericalCauchyLatent": "spcauchy",
    "PowerSphericalLatent": "power_spherical",
}
ORDER = ["cora", "citeseer", "pubmed"], list(FAMILIES.values())


def load_runs(folders: list[Path]) -> dict[tuple[str, str], list[dict]]:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for folder in folders:
        for path in sorted(Path(folder).rglob("results.json")):
            res = json.loads(path.read_text())
            config = res["config"]
            if "name" not in config.get("dataset", {}):
                continue  # not a graph run
            family = FAMILIES.get(config["latent"]["_target_"].rsplit(".", 1)[-1], config["latent"]["_target_"])
            runs[(config["dataset"]["name"].lower(), family)].append(res)
    return runs


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(runs: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| dataset | latent | seeds | test AUC | test AP | paper AUC | paper AP | AUC - paper | AP - paper "
        "| best epoch (median) | wall s/run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    datasets, families = ORDER
    keys = sorted(runs, key=lambda k: (datasets.index(k[0]) if k[0] in datasets else 99,
                                       families.index(k[1]) if k[1] in families else 99))
    for key in keys:
        rs = runs[key]
        auc = [100 * r["metrics"]["test/auc"] for r in rs]
        ap = [100 * r["metrics"]["test/ap"] for r in rs]
        epochs = [r["metrics"].get("best/epoch", float("nan")) for r in rs]
        wall = [r["wall_time_s"] for r in rs]
        paper = PAPER.get(key)
        diff = (f"{statistics.mean(auc) - paper[0]:+.1f}", f"{statistics.mean(ap) - paper[1]:+.1f}") if paper else ("", "")
        lines.append(
            f"| {key[0]} | {key[1]} | {len(rs)} | {mean_std(auc)} | {mean_std(ap)} | "
            f"{paper[0] if paper else ''} | {paper[1] if paper else ''} | {diff[0]} | {diff[1]} | "
            f"{statistics.median(epochs):.0f} | {statistics.mean(wall):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders searched for results.json")
    args = parser.parse_args()
    runs = load_runs(args.folders)
    if not runs:
        raise SystemExit(f"no link-prediction results.json under {', '.join(map(str, args.folders))}")
    print(table(runs))
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    commits = sorted({str(r.get("commit")) for rs in runs.values() for r in rs})
    print(f"\nseeds: {seeds}; commits: {', '.join(commits)}")


if __name__ == "__main__":
    main()
