"""``hydra/sweeper=optuna_search`` (conf/hydra/sweeper/optuna_search.yaml): hsvae's Optuna search sweeper.

It lives here because Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package; the search
itself is :mod:`hsvae.sweeps.optuna_search`. Hydra imports this module at every start-up (its plugin scan), so it
imports nothing heavy: Optuna is imported when a search starts, and only then.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSearchSweeper(Sweeper):
    """Runs :func:`hsvae.sweeps.optuna_search.run_search` with the configured launcher. Its settings are read from
    the composed ``hydra.sweeper`` node (so their interpolations resolve against the whole config)."""

    def __init__(self, **settings: Any) -> None:
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from hsvae.sweeps.optuna_search import run_search  # Optuna and the search: only when a search runs

        assert self.config is not None and self.hydra_context is not None
        run_search(self.config, self.launcher, self.hydra_context.config_loader.load_sweep_config, arguments)
