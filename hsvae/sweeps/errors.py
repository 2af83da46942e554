"""The errors of a search that a training job may raise or the entry points classify: light on purpose (a training
job imports this, never Optuna)."""

from __future__ import annotations


class MissingMetricError(ValueError):
    """``optimized_metric`` is not among a run's metrics: a search of it would be a search of nothing."""


class SearchSpaceError(ValueError):
    """The search space or the search's settings name a parameter, a value or an option that cannot be used."""


class NonFiniteObjectiveError(ValueError):
    """A trial's ``optimized_metric`` is NaN or infinite (a diverged run): the trial counts as failed."""
