"""Hydra callbacks (``hydra.callbacks`` in conf/hydra/default.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class EmptySweepError(ValueError):
    """A multirun whose sweep expanded to no job at all."""


#: Set by :class:`SweepChecks` in the launching process; ``hsvae.cli.train.main`` exits non-zero on it
#: (Hydra turns exceptions raised in callbacks into warnings).
sweep_problem: str | None = None


class SweepChecks(Callback):
    """Fail a multirun that launched no job (e.g. ``seed='range(0)'``) instead of exiting 0 having done nothing."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global sweep_problem
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = [p for p in sweep_dir.glob("*/.hydra")] if sweep_dir.is_dir() else []
        if not jobs:
            overrides = " ".join(config.hydra.overrides.task) or "(none)"
            sweep_problem = (
                f"the sweep launched no job: its parameters expand to an empty set (overrides: {overrides}; "
                f"sweep params: {dict(config.hydra.sweeper.get('params') or {})}). Check for an empty range or choice."
            )
            raise EmptySweepError(sweep_problem)
