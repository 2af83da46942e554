"""A sweep's time budget (``budget_minutes=170``): start a run only when it is expected to finish inside it.

The budget counts from the start of the sweep command (``budget.json`` in the sweep folder, written by the sweep's
callback before the first job; a single run counts from its own start). A job predicts its run's time from what
the runs of the same protocol (``task_name``) in the sweep folder measured: their seconds per epoch (finished
runs' wall time over their epochs, the test stage included; unfinished runs' ``progress.json``) times the epochs
this run still has to go: all of ``trainer.max_epochs`` without early stopping, the median of the finished runs'
epochs with it, less the epochs its own checkpoint already holds. With nothing measured yet there is no
prediction and the run starts. A skipped run leaves a record (``status: skipped``, the reason) that make_tables
lists and that the same sweep command, run again, replaces by the run.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hsvae.analysis.results import BUDGET_FILE, PROGRESS_FILE, read_json, saved_task_name
from hsvae.utils.io import write_json_atomic
from hsvae.utils.errors import BudgetError


def budget_minutes(cfg: DictConfig) -> float | None:
    value = cfg.get("budget_minutes")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise BudgetError(f"budget_minutes must be a number of minutes > 0 (or null for no budget), got {value!r}")
    return float(value)


def start_sweep_budget(sweep_dir: Path, minutes: float) -> None:
    """Written by the launching process before the first job: the budget counts from now."""
    now = time.time()
    write_json_atomic(Path(sweep_dir) / BUDGET_FILE, {
        "started": now, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "budget_minutes": minutes, "deadline": now + 60 * minutes})


def deadline(cfg: DictConfig, started: float) -> float | None:
    """The time by which the runs of this command must have finished (None without a budget)."""
    minutes = budget_minutes(cfg)
    if minutes is None:
        return None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        try:
            return float(json.loads((Path(HydraConfig.get().sweep.dir) / BUDGET_FILE).read_text())["deadline"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a launcher that ran no callback: the job's own start
    return started + 60 * minutes


@dataclass
class Measurement:
    epochs: int
    seconds: float
    finished: bool


def measurements(root: Path, task_name: str, exclude: Path | None = None) -> list[Measurement]:
    """What the runs of ``task_name`` under ``root`` measured (``exclude``: this run's folder)."""
    found: dict[Path, Measurement] = {}
    for path in sorted(root.rglob("results.json")):
        data = read_json(path)
        if (not data or data.get("status", "finished") != "finished"
                or (data.get("config") or {}).get("task_name") != task_name):
            continue
        epochs, wall = data.get("epochs"), data.get("wall_time_s")
        if isinstance(epochs, int) and epochs > 0 and isinstance(wall, (int, float)) and wall > 0:
            found[path.parent] = Measurement(epochs, float(wall), True)
    for path in sorted(root.rglob(PROGRESS_FILE)):
        if path.parent in found or path.parent == exclude:
            continue
        data, results = read_json(path), read_json(path.parent / "results.json")
        config = (results or {}).get("config") or {}
        if data and isinstance(data.get("epochs"), int) and data["epochs"] > 0 and (
                not config or config.get("task_name") == task_name) and saved_task_name(path.parent) in (None, task_name):
            found[path.parent] = Measurement(data["epochs"], float(data.get("elapsed_s", 0.0)), False)
    return [m for m in found.values() if m.seconds > 0]


def expected_seconds(cfg: DictConfig, output_dir: Path, root: Path) -> tuple[float, str] | None:
    """``(seconds, how)``: the predicted time of this run from what ``root``'s runs measured, or None."""
    measured = measurements(root, str(cfg.get("task_name")), exclude=output_dir)
    if not measured:
        return None
    per_epoch = statistics.median(m.seconds / m.epochs for m in measured)
    max_epochs = int(cfg.trainer.get("max_epochs") or 0)
    if (cfg.get("callbacks") or {}).get("early_stopping"):
        finished = [m.epochs for m in measured if m.finished]
        if not finished:
            return None
        epochs, rule = statistics.median(finished), f"the median of {len(finished)} finished runs' epochs"
        if 0 < max_epochs < epochs:
            epochs, rule = max_epochs, "trainer.max_epochs"
    elif max_epochs > 0:
        epochs, rule = max_epochs, "trainer.max_epochs"
    else:
        return None
    done = (read_json(output_dir / PROGRESS_FILE) or {}).get("epochs", 0)
    done = done if isinstance(done, int) and (output_dir / "checkpoints" / "last.ckpt").is_file() else 0
    left = max(epochs - done, 1)
    how = f"{left:g} epochs ({rule}{f', less {done} done' if done else ''}) x {per_epoch:.1f} s"
    return left * per_epoch, how


def budget_refusal(cfg: DictConfig, output_dir: Path, started: float) -> str | None:
    """Why this run is not started under the budget (None: start it)."""
    end = deadline(cfg, started)
    if end is None:
        return None
    root = Path(HydraConfig.get().sweep.dir) if (
        HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN) else output_dir.parent
    left = end - time.time()
    if left <= 0:
        return f"the budget of {budget_minutes(cfg):g} minutes is spent"
    expected = expected_seconds(cfg, output_dir, root)
    if expected is None or expected[0] <= left:
        return None
    seconds, how = expected
    return (f"expected {seconds / 60:.0f} min ({how}), {left / 60:.0f} min of the {budget_minutes(cfg):g}-minute "
            "budget left")
