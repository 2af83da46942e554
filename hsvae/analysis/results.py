"""What a run leaves in its directory, read back: results.json (format, status), the overrides of a job, and
the description a hyperparameter search writes beside its trials."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

#: the version of results.json's layout (hsvae/cli/report.py writes it)
RESULTS_FORMAT = 1
#: written into a search's sweep directory before the first trial (hsvae/sweeps/optuna_search.py)
DESCRIPTION_FILE = "search.yaml"
#: written into a search's sweep directory when it ends: the best trial (a multi-objective search's Pareto front)
SEARCH_RESULTS_FILE = "optimization_results.yaml"
#: written into a run directory after every epoch: epochs done, seconds spent, the epoch limit
PROGRESS_FILE = "progress.json"
#: in a sweep folder with a time budget: when the sweep command started, and its deadline
BUDGET_FILE = "budget.json"
#: in a run's folder while a process works there: {"host", "pid", "since"} (hsvae/cli/continuation.py)
LOCK_FILE = ".lock"


#: the statuses of a run that ended as it should: trained to its end, or stopped by a search's pruner (its
#: record and checkpoint kept; the same command does not train it further)
DONE_STATUSES = ("finished", "pruned")


def unfinished_reason(results: dict) -> str | None:
    """``"<status>: <reason>"`` for the results.json of a run that did not finish (failed, interrupted), else
    None (results.json of earlier formats have no status: they were written by finished runs)."""
    if results.get("status", "finished") == "finished":
        return None
    return f"{results['status']}: {results.get('reason', 'no reason recorded')}"


def saved_task_name(run_dir: Path) -> str | None:
    """The ``task_name`` of a run's saved config (``.hydra/config.yaml``), or None."""
    try:
        config = yaml.safe_load((Path(run_dir) / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    name = config.get("task_name") if isinstance(config, dict) else None
    return str(name) if name is not None else None


def read_json(path: Path) -> dict | None:
    """A JSON file's object (None when absent, unreadable or not an object)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(output_dir: Path) -> dict | None:
    """The results.json of a run directory as a dict (None when absent or unreadable)."""
    return read_json(Path(output_dir) / "results.json")


#: Overrides that say how a run was run, not which run it is (the launcher, the time budget, the device, the
#: loggers, the progress bar; ``experiment`` and ``sweep`` choose the folder of a table's runs): not a table's cell.
#: conf/hydra/default.yaml leaves the same keys out of a job's folder name (a test keeps the two lists equal).
OPERATIONAL_KEYS = ("experiment", "sweep", "launcher", "budget_minutes", "auto_resume", "allow_overwrite", "trainer",
                    "logger", "callbacks.progress_bar", "gpu_per_job")


def read_overrides(job_dir: Path) -> dict[str, str]:
    """A job's command-line overrides (``.hydra/overrides.yaml``) as ``{key: value}``, without ``+``/``~`` and
    without the :data:`OPERATIONAL_KEYS`."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        if key.lstrip("+~") not in OPERATIONAL_KEYS:
            out[key.lstrip("+~")] = value
    return out
