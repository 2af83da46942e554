"""``hydra/sweeper=optuna_search`` (conf/hydra/sweeper/optuna_search.yaml): hydra-optuna-sweeper's sweeper with
the checks of :mod:`hsvae.sweeps.optuna_search` (unknown parameters refused before the first trial, NaN metrics recorded
as failed trials, a missing metric stopping the search, a persisted study resumed).

It lives here because Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package; the code
is in ``hsvae.sweeps.optuna_search``. Hydra imports this module at every start-up (its plugin scan), so it imports
nothing heavy, and nothing at all when hydra-optuna-sweeper is not installed.
"""

from __future__ import annotations

import logging
from typing import Any

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the `search` extra is not installed: no search sweeper (train.py says which package)
    OptunaSweeper = None

if OptunaSweeper is not None:
    # alembic (Optuna's database migrations) logs each of its plugins at INFO when Hydra instantiates the
    # sampler (before the sweeper exists): keep its warnings only
    logging.getLogger("alembic").setLevel(logging.WARNING)

    class OptunaSearchSweeper(OptunaSweeper):
        """hydra-optuna-sweeper's ``OptunaSweeper``, run through :func:`hsvae.sweeps.optuna_search.run_search`."""

        def sweep(self, arguments: list[str]) -> Any:
            from hsvae.sweeps.optuna_search import run_search

            return run_search(self.sweeper, arguments)
