"""Hydra callbacks (``hydra.callbacks`` in conf/hydra/default.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hsvae.analysis.results import read_status
from hsvae.sweeps.budget import start_sweep_budget
from hsvae.utils.errors import EmptySweepError


#: Set by :class:`SweepChecks` in the launching process; ``hsvae.cli.entry_points.train_main`` exits non-zero on it
#: (Hydra turns exceptions raised in callbacks into warnings).
sweep_problem: str | None = None


class SweepChecks(Callback):
    """Fail a multirun that launched no job (e.g. ``seed='range(0)'``) instead of exiting 0 having done nothing;
    start a sweep's time budget (``budget_minutes``) and say at its end which runs it skipped."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        minutes = config.get("budget_minutes")
        if isinstance(minutes, (int, float)) and not isinstance(minutes, bool) and minutes > 0:
            start_sweep_budget(Path(config.hydra.sweep.dir), float(minutes))  # a bad value: each job says so

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global sweep_problem
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [p.parent for p in sweep_dir.glob("*/.hydra")] + [p.parent for p in sweep_dir.glob("*/results.json")]
        skipped = sorted({p.name for p in jobs if (read_status(p) or {}).get("status") == "skipped"})
        if skipped:
            print(f"time budget: {len(skipped)} run{'s' if len(skipped) > 1 else ''} not started, not expected to "
                  f"finish in budget_minutes={config.get('budget_minutes')} (each one's results.json says why): "
                  f"{', '.join(skipped)}. The same command, run again, continues the sweep.", file=sys.stderr)
        if not jobs:
            overrides = " ".join(config.hydra.overrides.task) or "(none)"
            sweep_problem = (
                f"the sweep launched no job: its parameters expand to an empty set (overrides: {overrides}; "
                f"sweep params: {dict(config.hydra.sweeper.get('params') or {})}). Check for an empty range or choice."
            )
            raise EmptySweepError(sweep_problem)
