"""The errors a user can act on, in one light module (it imports nothing): the entry points classify them into one
line each before torch is imported (hsvae/cli/failures.py), and the layers that raise them import them from here.

Usage and configuration errors (exit 2): ConfigError, EvaluationError, BudgetError, EmptySweepError,
SearchSpaceError, MissingMetricError. Runtime failures (exit 1): DatasetNotFoundError, MalformedDatasetError, NonFiniteLossError,
CheckpointError. NonFiniteObjectiveError is the search's own (a diverged trial counts as failed).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; raised before anything is trained or written."""


class BudgetError(ValueError):
    """``budget_minutes`` is not a positive number of minutes."""


class EmptySweepError(ValueError):
    """A multirun whose sweep expanded to no job at all."""


class MissingMetricError(ValueError):
    """``optimized_metric`` is not among a run's metrics: a search of it would be a search of nothing."""


class SearchSpaceError(ValueError):
    """The search space or the search's settings name a parameter, a value or an option that cannot be used."""


class NonFiniteObjectiveError(ValueError):
    """A trial's ``optimized_metric`` is NaN or infinite (a diverged run): the trial counts as failed."""


class EvaluationError(ValueError):
    """An evaluator chosen for data or a model that cannot give what it reads, or with settings the data cannot
    serve (a usage error, reported in one line before training)."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing or unreadable and could not be downloaded."""


class MalformedDatasetError(ValueError):
    """A dataset file exists but cannot be read as what it should be (empty, corrupt, not SMILES)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops at once (checkpoints already written are kept)."""


class CheckpointError(RuntimeError):
    """A checkpoint file is not a checkpoint, or does not fit the model the config builds."""
