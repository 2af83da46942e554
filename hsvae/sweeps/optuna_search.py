"""Hyperparameter searches (``python train.py -m hparams_search=<name>``): hsvae's sweeper on Optuna's ask and tell.

The sweeper (``hydra/sweeper=optuna_search``, hydra_plugins/hsvae_search) calls :func:`run_search`. A search runs in
batches of ``n_jobs`` trials: it claims each trial from the study (hsvae/sweeps/study.py), hands the batch's
overrides to the configured launcher (``launcher=joblib`` in parallel, ``launcher=slurm`` as a job array; each job
gets ``trial=<number>``, which it reports its epochs to, for pruning), and tells the study each job's outcome:

- a finished job's ``optimized_metric`` (a list of metrics for a multi-objective search);
- PRUNED when the run stopped because the pruner said so (the run writes ``status: pruned`` in its results.json);
- FAIL for a crash or a NaN/infinite metric (the search goes on while a batch's failures stay within
  ``max_failure_rate``); a metric the runs do not produce (:class:`MissingMetricError`) stops the search.

Before the first trial: an unknown parameter or a value the config cannot take is refused (every choice and both
ends of every range are composed), the settings (sampler, pruner, storage, directions) are checked, and
``search.yaml`` and ``multirun.yaml`` are written into the sweep folder. The same command run again continues the
study: the trials an interrupted search left running are failed as ``interrupted`` and run again as new trials,
and the new jobs' folders are numbered after the existing ones. ``optimization_results.yaml`` holds the best
trial (the Pareto front of a multi-objective search) at the end.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState

from hsvae.analysis.results import DESCRIPTION_FILE, SEARCH_RESULTS_FILE
from hsvae.sweeps import study as studies
from hsvae.utils.errors import MissingMetricError, NonFiniteObjectiveError, SearchSpaceError
from hsvae.sweeps.search_space import as_override, check_search_space, describe, search_space

log = logging.getLogger(__name__)

#: the key of the run config that names the trial a job is (conf/train.yaml)
TRIAL_KEY = "trial"


def directions_of(config: DictConfig, settings: DictConfig) -> tuple[list[str], list[str]]:
    """(metrics, directions), one direction per metric."""
    metric = config.get("optimized_metric")
    if not metric:
        raise SearchSpaceError("optimized_metric is not set: a search needs the name of a metric that train.py "
                               "returns (a key of results.json's metrics, e.g. best/val_elbo)")
    metrics = [metric] if isinstance(metric, str) else list(metric)
    direction = settings.get("direction", "maximize")
    directions = [direction] if isinstance(direction, str) else list(direction)
    if len(directions) != len(metrics) or any(d not in ("maximize", "minimize") for d in directions):
        raise SearchSpaceError(f"hydra.sweeper.direction={directions}: maximize or minimize, one per optimized_metric "
                               f"({metrics})")
    return metrics, directions


def check_pruning(settings: DictConfig, config: DictConfig, directions: list[str]) -> None:
    """Refuse a pruner the runs cannot serve: several objectives, no shared storage, or a monitor whose mode is not
    the search's direction (a run reports its checkpoint's monitored metric each epoch)."""
    name, _ = studies.pruner_options(settings.get("pruner"))
    if name == "none":
        return
    if len(directions) > 1:
        raise SearchSpaceError(f"hydra.sweeper.pruner.name={name}: Optuna prunes single-objective studies only; "
                               "set hydra.sweeper.pruner.name=none for a multi-objective search")
    if settings.get("storage") is None:
        raise SearchSpaceError(f"hydra.sweeper.pruner.name={name} needs a storage the runs can reach: set "
                               "hydra.sweeper.storage (sqlite:///..., journal://...), or pruner.name=none")
    checkpoint = (config.get("callbacks") or {}).get("model_checkpoint") or {}
    mode = checkpoint.get("mode", "min")
    if {"max": "maximize", "min": "minimize"}[mode] != directions[0]:
        raise SearchSpaceError(f"hydra.sweeper.pruner.name={name}: the runs report {checkpoint.get('monitor')} "
                               f"(mode {mode}) each epoch, but the search is to {directions[0]} "
                               f"{config.get('optimized_metric')}: make them agree or set pruner.name=none")


def _next_job_number(sweep_dir: Path) -> int:
    """The first job number after every numbered job folder already in ``sweep_dir``."""
    if not sweep_dir.is_dir():
        return 0
    return max([0, *(int(p.name) + 1 for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())])


def write_description(sweep_dir: Path, config: DictConfig, settings: DictConfig, metrics: list[str],
                      directions: list[str], distributions: dict, fixed: dict) -> Path:
    """``search.yaml`` (what the search is, resolved) and ``multirun.yaml`` (the composed config)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    single = len(metrics) == 1
    description = {
        "optimized_metric": metrics[0] if single else metrics,
        "direction": directions[0] if single else directions,
        "study_name": settings.study_name,
        "storage": settings.get("storage"),
        "n_trials": settings.n_trials,
        "n_jobs": settings.n_jobs,
        "max_failure_rate": settings.max_failure_rate,
        "sampler": OmegaConf.to_container(settings.get("sampler") or {}, resolve=True),
        "pruner": OmegaConf.to_container(settings.get("pruner") or {}, resolve=True),
        "params": {name: describe(d) for name, d in distributions.items()},
        "fixed": {name: str(value) for name, value in fixed.items()},
    }
    path = sweep_dir / DESCRIPTION_FILE
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def _job_dir(ret: JobReturn) -> str:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # noqa: BLE001 -- a launcher that does not fill hydra_cfg
        return f"the job with overrides {list(ret.overrides or [])}"


def outcome(ret: JobReturn, n_values: int) -> list[float] | BaseException:
    """A job's objective values, or the error that makes its trial a failure."""
    if ret.status != JobStatus.COMPLETED:
        return ret._return_value  # the job's exception (JobReturn.return_value would raise it)
    value = ret.return_value
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) != n_values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return MissingMetricError(f"{_job_dir(ret)} returned {value!r}, not {n_values} number(s): is optimized_metric "
                                  "set for the runs?")
    if not all(math.isfinite(v) for v in values):
        return NonFiniteObjectiveError(f"optimized_metric = {value} in {_job_dir(ret)}: the run diverged; the trial "
                                       "counts as failed")
    return [float(v) for v in values]


class Search:
    """One process's part of a search (several processes may share one study)."""

    def __init__(self, config: DictConfig, settings: DictConfig, launcher: Any, load_sweep_config: Any,
                 arguments: Sequence[str]):
        self.config, self.settings, self.launcher = config, settings, launcher
        self.metrics, self.directions = directions_of(config, settings)
        self.distributions, self.fixed = search_space(settings.get("params"), arguments)
        if not self.distributions:
            raise SearchSpaceError("the search has no parameter to search: hydra.sweeper.params holds no range, "
                                   "interval or choice")
        if int(settings.n_trials) < 1 or int(settings.n_jobs) < 1:
            raise SearchSpaceError(f"hydra.sweeper.n_trials={settings.n_trials} and n_jobs={settings.n_jobs}: both >= 1")
        check_pruning(settings, config, self.directions)
        self.sampler = studies.build_sampler(settings.get("sampler"))
        check_search_space(lambda overrides: load_sweep_config(config, overrides), self.distributions, self.fixed)
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.storage = settings.get("storage")
        self.study = optuna.create_study(study_name=settings.study_name, storage=studies.open_storage(self.storage),
                                         sampler=self.sampler, directions=self.directions, load_if_exists=True)
        if [d.name.lower() for d in self.study.directions] != self.directions:
            raise SearchSpaceError(f"study {settings.study_name!r} in {self.storage} was created to "
                                   f"{[d.name.lower() for d in self.study.directions]}, not {self.directions}: choose "
                                   "another study_name or storage")
        write_description(self.sweep_dir, config, settings, self.metrics, self.directions, self.distributions,
                          self.fixed)
        self.missing: MissingMetricError | None = None
        self.job_errors: list[BaseException] = []

    def run(self) -> None:
        interrupted = studies.fail_abandoned(self.study)
        if interrupted:
            log.warning("trials %s were running when their search was interrupted: recorded as failed (interrupted) "
                        "and tried again as new trials", interrupted)
        already = studies.counted(self.study)
        log.info("%s study %r in %s: %d of %d trials recorded", "continuing" if already else "starting",
                 self.settings.study_name, self.storage or "memory", already, self.settings.n_trials)
        job_idx = _next_job_number(self.sweep_dir)
        while True:
            batch = self._claim_batch()
            if not batch:
                break
            overrides = [[*(f"{k}={v}" for k, v in self.fixed.items()),
                          *(as_override(name, trial.params[name]) for name in self.distributions),
                          f"{TRIAL_KEY}={trial.number}"] for trial in batch]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=job_idx)
            except BaseException:
                for trial in batch:  # never told: interrupted with the batch
                    studies.fail(self.study, trial, studies.INTERRUPTED)
                raise
            job_idx += len(batch)
            self._tell(batch, returns)
        self._finish()

    def _claim_batch(self) -> list[Trial]:
        """Up to ``n_jobs`` trials, claimed one after the other until the search is complete."""
        claims = (studies.claim(self.study, int(self.settings.n_trials), self.storage, self.distributions)
                  for _ in range(int(self.settings.n_jobs)))
        return list(itertools.takewhile(lambda trial: trial is not None, claims))

    def _tell(self, batch: list[Trial], returns: Sequence[JobReturn]) -> None:
        failures = []
        for trial, ret in zip(batch, returns):
            result = outcome(ret, len(self.metrics))
            if isinstance(result, BaseException):
                failures.append(result)
                if isinstance(result, MissingMetricError) and self.missing is None:
                    self.missing = result
                studies.fail(self.study, trial, f"{type(result).__name__}: {result}")
                log.warning("trial %d failed: %s", trial.number, result)
            elif self._pruned(trial):
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, result)
        self.job_errors += failures
        if self.missing is not None:
            raise self.missing
        rate = float(self.settings.max_failure_rate)
        if failures and len(failures) > rate * len(batch):
            raise RuntimeError(f"{len(failures)} of {len(batch)} trials of a batch failed (more than "
                               f"max_failure_rate={rate}): the first: {failures[0]}. Each job's folder under "
                               f"{self.sweep_dir} has its log") from failures[0]

    def _pruned(self, trial: Trial) -> bool:
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        return studies.PRUNED_AT in frozen.user_attrs

    def _finish(self) -> None:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            raise RuntimeError(f"no trial of the search completed (every one failed, diverged or was pruned): see "
                               f"the jobs' logs under {self.sweep_dir}")
        if len(self.metrics) == 1:
            best = self.study.best_trial
            results = {"name": str(self.settings.study_name), "best_trial": best.number,
                       "best_params": best.params, "best_value": best.value}
        else:
            results = {"name": str(self.settings.study_name), "metrics": self.metrics,
                       "pareto_front": [{"trial": t.number, "params": t.params, "values": t.values}
                                        for t in self.study.best_trials]}
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        results["trials"] = {state.name.lower(): states.count(state) for state in TrialState if state in states}
        (self.sweep_dir / SEARCH_RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))
        log.info("search %r: %s", self.settings.study_name, results["trials"])


def run_search(config: DictConfig, launcher: Any, load_sweep_config: Any, arguments: Sequence[str]) -> None:
    """The whole search of a sweeper: ``config`` is the composed config (``hydra.sweeper`` its settings)."""
    # what the search prints is ours (the study's creation, each trial's outcome): Optuna's own lines repeat it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Search(config, config.hydra.sweeper, launcher, load_sweep_config, arguments).run()
