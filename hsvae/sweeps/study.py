"""The Optuna side of a search: where the study lives (``hydra.sweeper.storage``), its sampler and pruner by name
(:data:`SAMPLERS`, :data:`PRUNERS`; the settings are README's "Hyperparameter search"; a pruner's warm-up is applied
by the run, hsvae/training/pruning.py), and which trials count.

A search runs until ``n_trials`` trials count: complete, pruned, running, or failed by a crash or a diverged metric.
A trial left running by a process that died on this host is failed as ``interrupted`` (it does not count: its
settings are tried again as a new trial). Processes sharing a file storage claim trials under a lock beside it; a
trial asked beyond ``n_trials`` in a race on a database storage is closed at once as ``surplus`` (never run). So
``n_trials`` is exact, and trial numbers are never reused (Optuna numbers them in the storage).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import psutil
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, Trial, TrialState

from hsvae.utils.errors import SearchSpaceError

#: user attributes a trial carries (the dashboard shows them)
HOST, PID, INTERRUPTED, SURPLUS, PRUNED_AT = "host", "pid", "interrupted", "surplus", "pruned_at_epoch"

SAMPLERS = {"tpe": "TPESampler", "gp": "GPSampler", "cmaes": "CmaEsSampler", "random": "RandomSampler",
            "nsga2": "NSGAIISampler"}
PRUNERS = {"median": "MedianPruner", "successive_halving": "SuccessiveHalvingPruner", "hyperband": "HyperbandPruner",
           "none": "NopPruner"}


# -- storage -------------------------------------------------------------------------------------------
def storage_file(spec: str | None) -> Path | None:
    """The file behind a ``sqlite:///`` or ``journal://`` storage, else None."""
    if isinstance(spec, str):
        for prefix in ("sqlite:///", "journal://"):
            if spec.startswith(prefix):
                return Path(spec[len(prefix):])
    return None


def open_storage(spec: str | None) -> optuna.storages.BaseStorage:
    if spec is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(spec, str) or ("://" not in spec):
        raise SearchSpaceError(f"hydra.sweeper.storage={spec!r}: a storage is sqlite:///<file>, journal://<file>, "
                               "a database URL, or null")
    path = storage_file(spec)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if spec.startswith("journal://"):
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    # several processes write one SQLite file: wait for its lock instead of failing at once
    kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite:") else {}
    # ... and the first of two processes started together creates its tables alone (Optuna stamps the schema
    # version unguarded: the second would fail on a UNIQUE constraint)
    with claims_lock(spec):
        return optuna.storages.RDBStorage(spec, engine_kwargs=kwargs)


@contextlib.contextmanager
def claims_lock(spec: str | None) -> Iterator[None]:
    """Held while a process creates a file storage's tables, or counts the study's trials and asks for one (a file
    storage's processes only)."""
    path = storage_file(spec)
    if path is None:
        yield
        return
    lock = JournalFileOpenLock(f"{path}.claims")
    while not lock.acquire():
        pass  # acquire() waits and returns False only after it removed a stale lock: try again
    try:
        yield
    finally:
        lock.release()


# -- samplers and pruners ------------------------------------------------------------------------------
def build_sampler(cfg: Any) -> optuna.samplers.BaseSampler:
    options = dict(cfg or {})
    name = options.pop("name", "tpe")
    if name not in SAMPLERS:
        raise SearchSpaceError(f"hydra.sweeper.sampler.name={name!r}: one of {', '.join(SAMPLERS)}")
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(**options)
    except TypeError as err:
        raise SearchSpaceError(f"hydra.sweeper.sampler: {err} (options of optuna.samplers.{SAMPLERS[name]})") from None


def pruner_options(cfg: Any) -> tuple[str, dict[str, Any]]:
    options = dict(cfg or {})
    name = options.pop("name", "none") or "none"
    options.pop("warmup_epochs", None)  # applied by the run (hsvae/training/pruning.py)
    if name not in PRUNERS:
        raise SearchSpaceError(f"hydra.sweeper.pruner.name={name!r}: one of {', '.join(PRUNERS)}")
    return name, options


def build_pruner(cfg: Any, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    name, options = pruner_options(cfg)
    if name == "none":
        return optuna.pruners.NopPruner()  # (the other pruners' settings may be left in the config)
    if name == "hyperband":
        options.setdefault("max_resource", max_epochs or "auto")
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except TypeError as err:
        raise SearchSpaceError(f"hydra.sweeper.pruner: {err}") from None


def load(study_name: str, storage: str | None, pruner_cfg: Any = None, max_epochs: int | None = None) -> optuna.Study:
    """An existing study, with the search's pruner (a run reports to it and asks it whether to stop)."""
    return optuna.load_study(study_name=study_name, storage=open_storage(storage),
                             pruner=build_pruner(pruner_cfg, max_epochs))


class RunTrial(Trial):
    """The trial a run is, as hsvae.training.pruning.TrialPruning uses it: Optuna's ``report`` and
    ``should_prune``, and :meth:`mark_pruned`."""

    def mark_pruned(self, epoch: int) -> None:
        # the sweeper reads it when the job returns, and tells the study PRUNED
        self.set_user_attr(PRUNED_AT, epoch)


def trial_of_run(study: optuna.Study, number: int) -> RunTrial:
    """The running trial ``number`` of ``study``, as the object a run reports to."""
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == number:
            # Optuna has no public lookup of a running trial's handle; its id is the storage's key
            return RunTrial(study, frozen._trial_id)
    raise SearchSpaceError(f"trial {number} of study {study.study_name!r} is not running: a run reports only to "
                           "the trial its search started (trial=<n> is set by the search, not by hand)")


def run_trial(settings: Any, number: int, max_epochs: int | None) -> RunTrial:
    """The trial ``number`` of the search whose sweeper settings (``hydra.sweeper``) are ``settings``."""
    return trial_of_run(load(settings.study_name, settings.get("storage"), settings.get("pruner"), max_epochs), number)


# -- which trials count ------------------------------------------------------------------------------
def counts(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    attrs = trial.user_attrs
    return trial.state == TrialState.FAIL and not attrs.get(INTERRUPTED) and not attrs.get(SURPLUS)


def counted(study: optuna.Study) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def _abandoned(trial: FrozenTrial, host: str) -> bool:
    if trial.state != TrialState.RUNNING or trial.user_attrs.get(HOST) != host:
        return False
    pid = trial.user_attrs.get(PID)
    return not isinstance(pid, int) or not psutil.pid_exists(pid)


def fail_abandoned(study: optuna.Study) -> list[int]:
    """Fail, as interrupted, the running trials of processes of this host that no longer run; their numbers."""
    host = socket.gethostname()
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _abandoned(trial, host):
            fail(study, Trial(study, trial._trial_id), INTERRUPTED)
            numbers.append(trial.number)
    return numbers


def fail(study: optuna.Study, trial: Trial, why: str) -> None:
    """Close a running trial as failed: ``why`` is ``interrupted``, ``surplus`` (attributes set to true) or the
    failure's reason (the attribute ``failure``)."""
    if why in (INTERRUPTED, SURPLUS):
        trial.set_user_attr(why, True)
    else:
        trial.set_user_attr("failure", why[:2000])
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def claim(study: optuna.Study, n_trials: int, storage: str | None,
          distributions: dict[str, Any]) -> Trial | None:
    """Ask for a trial if fewer than ``n_trials`` count; None when the search is complete."""
    with claims_lock(storage):
        if counted(study) >= n_trials:
            return None
        trial = study.ask(fixed_distributions=distributions)
        trial.set_user_attr(HOST, socket.gethostname())
        trial.set_user_attr(PID, os.getpid())
    before = sum(counts(t) for t in study.get_trials(deepcopy=False) if t.number < trial.number)
    if before >= n_trials:  # another process claimed the last one at the same moment (a database storage)
        fail(study, trial, SURPLUS)
        return None
    return trial
