"""The end of a run: collect metrics, write results.json, print a table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from hsvae.cli.records import write_record


def _number(v) -> float:
    return float(v.detach().cpu()) if isinstance(v, torch.Tensor) else float(v)


def _finite_or_str(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: non-finite numbers are written as strings ("nan", "inf")."""
    if value is None:
        return None
    return value if math.isfinite(value) else str(value)


def collect_metrics(trainer: pl.Trainer, fit_metrics: dict) -> dict[str, float]:
    """Final train/val metrics of the fit, test metrics, and ``best/<monitor>`` from the checkpoint callback."""
    metrics = {k: _number(v) for k, v in fit_metrics.items()}
    metrics.update({k: _number(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "best_model_score", None) is not None:
        monitor = checkpoint.monitor.replace("/", "_")
        metrics[f"best/{monitor}"] = _number(checkpoint.best_model_score)
    return metrics


def write_results(output_dir: Path, cfg: DictConfig, metrics: dict, wall_time_s: float, extra: dict | None = None,
                  commit: str | None = None) -> Path:
    """Write a finished run's results.json (:func:`hsvae.cli.records.write_record`), with what train.py returns to
    a hyperparameter search (``optimized_metric``; value null when this run does not produce it); ``extra`` may
    hold another status (a pruned trial's)."""
    extra, name, wall_time_s = dict(extra or {}), cfg.get("optimized_metric"), round(wall_time_s, 3)
    if name:
        extra = {"optimized_metric": _objective_record(name, {**metrics, "wall_time_s": wall_time_s}), **extra}
    return write_record(output_dir, cfg, extra.pop("status", "finished"),
                        {k: _finite_or_str(v) for k, v in sorted(metrics.items())}, commit, wall_time_s=wall_time_s,
                        **extra)


def _objective_record(name: Any, metrics: dict) -> dict:
    """``{"name", "value"}`` of ``optimized_metric`` (lists of both for a multi-objective search's list; ``metrics``
    holds the run's ``wall_time_s`` too, an objective a search may weigh against quality)."""
    if isinstance(name, str):
        return {"name": name, "value": _finite_or_str(metrics.get(name))}
    names = list(name)
    return {"name": names, "value": [_finite_or_str(metrics.get(n)) for n in names]}


def print_metrics(metrics: dict, output_dir: Path) -> None:
    contents = output_contents(output_dir)
    listing = f"  ({', '.join(contents)})" if contents else ""
    print_table("hsvae results", ["value"], [(key, [metrics[key]]) for key in sorted(metrics)],
                f"{output_dir}{listing}")


def print_table(title: str, columns: list[str], rows: list[tuple[str, list[float]]], outputs: str) -> None:
    """A table of metrics (a row per metric, a column per value) and the line saying where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    for column in columns:
        table.add_column(column, justify="right")
    for key, values in rows:
        table.add_row(key, *(f"{v:.4f}" for v in values))
    console = Console()
    console.print(table)
    console.print(f"outputs: {outputs}", highlight=False, markup=False)


def output_contents(output_dir: Path, limit: int = 8) -> list[str]:
    """What the run left in its output directory, results.json first, folders with a trailing "/" (hidden
    entries such as .hydra/ aside): ``["results.json", "checkpoints/", "csv/", "plots/", "train.log"]``."""
    try:
        entries = [p for p in Path(output_dir).iterdir() if not p.name.startswith(".")]
    except OSError:
        return []
    names = sorted((p.name + ("/" if p.is_dir() else "") for p in entries), key=lambda n: (n != "results.json", n))
    return names if len(names) <= limit else [*names[:limit], f"... {len(names) - limit} more"]
