"""Hyperparameter searches (``python train.py -m hparams_search=<name>``) with Hydra's Optuna sweeper.

hydra-optuna-sweeper runs a search in batches of ``hydra.sweeper.n_jobs`` trials: it asks Optuna for the
batch's parameters, hands the batch to the launcher (``launcher=joblib`` runs it in parallel, ``launcher=slurm``
as a job array), and tells Optuna each job's return value (``train.py`` returns ``optimized_metric``). This
module adds what the plugin leaves out (its sweeper subclass, ``OptunaSearchSweeper`` in
``hydra_plugins/hsvae_search``, calls :func:`run_search`):

- an unknown parameter name, or a value the config cannot take (``latent=vfm``), is refused before the first
  trial: every choice and both ends of every range are composed first;
- a trial whose metric is NaN or infinite is recorded as failed (the plugin itself crashes on a NaN);
- a metric that a run does not produce (:class:`MissingMetricError`) stops the search after that batch,
  instead of being absorbed as one more failed trial;
- ``search.yaml`` (metric, direction, study, search space) and ``multirun.yaml`` are written into the sweep
  directory before the first trial, for ``scripts/summarize_search.py``;
- a SQLite storage's folder is created before Optuna opens it, and SQLAlchemy 2 (which optuna 2.x cannot use)
  is refused by name;
- a search restarted into the same ``hydra.sweep.dir`` (same study) continues: the trials that were running
  when it was interrupted are marked failed, only the missing trials are run, and the new trials' job
  directories are numbered after the existing ones.

Only :class:`MissingMetricError` and the pure helpers are imported by training jobs; Optuna is imported lazily.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hsvae.analysis.results import DESCRIPTION_FILE

log = logging.getLogger(__name__)


class MissingMetricError(ValueError):
    """``optimized_metric`` is not among a run's metrics: a search of it would be a search of nothing."""


class SearchSpaceError(ValueError):
    """The search space names a parameter, or a value, that the composed config does not have."""


class NonFiniteObjectiveError(ValueError):
    """A trial's ``optimized_metric`` is NaN or infinite (a diverged run): the trial counts as failed."""


# -- the search space, before the first trial --------------------------------------------------------------
def probe_overrides(distributions: dict[str, Any], fixed: dict[str, Any]) -> list[list[str]]:
    """Override lists that, composed one after the other, use every categorical choice and both ends of every
    numeric range at least once (as many lists as the largest choice has values, at least two)."""
    def values(distribution) -> list:
        choices = getattr(distribution, "choices", None)
        if choices is not None:
            return list(choices)
        return [distribution.low, distribution.high]

    per_param = {name: values(d) for name, d in distributions.items()}
    rounds = max([2, *(len(v) for v in per_param.values())])
    fixed_part = [f"{name}={value}" for name, value in fixed.items()]
    return [[*fixed_part, *(f"{name}={vals[i % len(vals)]}" for name, vals in per_param.items())]
            for i in range(rounds)]


def check_search_space(compose: Callable[[list[str]], Any], distributions: dict[str, Any],
                       fixed: dict[str, Any]) -> None:
    """Compose the config with every value of the search space; raise :class:`SearchSpaceError` naming each
    parameter (or value) that does not compose."""
    for overrides in probe_overrides(distributions, fixed):
        try:
            compose(overrides)
        except Exception as err:  # noqa: BLE001 -- Hydra raises several types; the message is what matters
            fixed_part = [f"{name}={value}" for name, value in fixed.items()]
            culprits = []
            for item in overrides[len(fixed_part):]:
                try:
                    compose([*fixed_part, item])
                except Exception:  # noqa: BLE001
                    culprits.append(item)
            named = ", ".join(repr(c.split("=", 1)[0]) for c in culprits) or "(their combination)"
            raise SearchSpaceError(
                f"the search space (hydra.sweeper.params and the command line's sweeps) cannot be composed with "
                f"the config: {'; '.join(culprits) or ' '.join(overrides)} -- unknown parameter or value {named}. "
                f"Hydra says: {err}"
            ) from None  # Hydra's message is in ours; its traceback would bury it


def search_space(params: Any, arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(distributions, fixed values) of a search: ``hydra.sweeper.params`` then the command line, as the
    plugin reads them (a later entry for the same name wins)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    items = [f"{k!s}={v}" for k, v in (params or {}).items()] + list(arguments)
    distributions, fixed = create_params_from_overrides(items)
    for name in fixed:
        distributions.pop(name, None)
    return distributions, fixed


# -- the jobs' return values ----------------------------------------------------------------------------
def _job_dir(ret: Any) -> str:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # noqa: BLE001 -- a launcher that does not fill hydra_cfg
        return f"the job with overrides {list(ret.overrides or [])}"


def screen_returns(returns: Sequence[Any], metric: str) -> MissingMetricError | None:
    """Turn each completed job whose value is not a finite number into a failed one (with a
    :class:`NonFiniteObjectiveError`), so the sweeper records it as a failed trial; return the first
    :class:`MissingMetricError` among the failed jobs, if any."""
    from hydra.core.utils import JobStatus

    missing = None
    for ret in returns:
        if ret.status == JobStatus.COMPLETED:
            value = ret.return_value
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                ret.status = JobStatus.FAILED
                ret.return_value = NonFiniteObjectiveError(
                    f"{metric} = {value} in {_job_dir(ret)}: the run diverged; the trial counts as failed")
        elif ret.status == JobStatus.FAILED and missing is None:
            error = ret._return_value  # the job's exception (JobReturn.return_value would re-raise it)
            if isinstance(error, MissingMetricError):
                missing = error
    return missing


class TrialLauncher:
    """Stands between the sweeper and the launcher: screens every batch's returns before the sweeper tells
    Optuna, and refuses the next batch once a run lacked the metric."""

    def __init__(self, launcher: Any, metric: str) -> None:
        self.launcher = launcher
        self.metric = metric
        self.missing: MissingMetricError | None = None
        #: the exceptions of the failed jobs (the sweeper re-raises one when a batch has too many failures)
        self.job_errors: list[BaseException] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from hydra.core.utils import JobStatus

        if self.missing is not None:
            raise self.missing
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.missing = screen_returns(returns, self.metric)
        self.job_errors += [r._return_value for r in returns if r.status == JobStatus.FAILED]
        return returns


# -- the storage ---------------------------------------------------------------------------------------
def sqlite_path(storage: Any) -> Path | None:
    """The database file of a ``sqlite:///<path>`` storage URL, else None."""
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):])
    return None


def prepare_storage(storage: Any) -> None:
    """Create a SQLite database's folder (the sweep directory does not exist before the first batch), and
    refuse an RDB storage that optuna 2.x cannot open with SQLAlchemy >= 2 (it fails with a bare assertion)."""
    if storage is None:
        return
    path = sqlite_path(storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(storage, str) and "://" in storage:
        import optuna
        import sqlalchemy

        if int(optuna.__version__.split(".")[0]) < 3 and int(sqlalchemy.__version__.split(".")[0]) >= 2:
            raise RuntimeError(
                f"hydra.sweeper.storage={storage}: optuna {optuna.__version__} (the version hydra-optuna-sweeper "
                f"pins) cannot use a database with SQLAlchemy {sqlalchemy.__version__}. Install SQLAlchemy 1.4: "
                "pip install 'sqlalchemy>=1.4,<2'   (or: pip install -e '.[search]'), or search without a "
                "persisted study: hydra.sweeper.storage=null"
            )


def _next_job_number(sweep_dir: Path, at_least: int) -> int:
    """The first job number >= ``at_least`` after every numbered job directory already in ``sweep_dir``."""
    if not sweep_dir.is_dir():
        return at_least
    return max([at_least, *(int(p.name) + 1 for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())])


def _persisted_study(impl: Any, tolerate: tuple[type[BaseException], ...]) -> Any:
    """The search's study as stored in ``impl.storage``, or None: no storage or study name, or loading it raised
    one of ``tolerate`` (``KeyError``: no such study yet)."""
    if impl.storage is None or impl.study_name is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    except tolerate:
        return None


def resume(impl: Any) -> None:
    """Continue a persisted study of the same name, if there is one: see the module docstring."""
    from optuna.trial import TrialState

    study = _persisted_study(impl, tolerate=(KeyError,))  # KeyError: no such study yet, a new search
    if study is None:
        return
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            # the sweeper is the only process that tells this study; a trial still running is one whose
            # batch was interrupted, and no one will ever report it
            study.tell(trial.number, state=TrialState.FAIL)
            log.warning("trial %d was running when the search was interrupted: recorded as failed", trial.number)
    planned = impl.n_trials
    impl.n_trials = max(0, planned - len(trials))
    impl.job_idx = _next_job_number(Path(impl.sweep_dir), len(trials))
    log.info("resuming study %r: %d trials recorded, %d of %d to run, job directories from %d",
             impl.study_name, len(trials), impl.n_trials, planned, impl.job_idx)


def fail_running_trials(impl: Any) -> None:
    """After an aborted batch: the trials asked for it were never told; record them as failed."""
    from optuna.trial import TrialState

    study = _persisted_study(impl, tolerate=(Exception,))  # any failure: nothing to clean up
    if study is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


# -- what the search was ----


def describe_distribution(distribution: Any) -> dict[str, Any]:
    """``{"choices": [...]}`` or ``{"low", "high", "log", "int"}`` of an Optuna distribution."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return {"choices": list(choices)}
    kind = type(distribution).__name__
    return {"low": distribution.low, "high": distribution.high, "log": "Log" in kind, "int": kind.startswith("Int")}


def write_search_description(impl: Any, metric: str, distributions: dict[str, Any], fixed: dict[str, Any]) -> Path:
    """``<sweep dir>/search.yaml`` (the metric, direction, study, search space and fixed overrides, resolved)
    and ``multirun.yaml`` (the composed config, as Hydra's basic sweeper writes it)."""
    import yaml
    from omegaconf import OmegaConf

    sweep_dir = Path(impl.sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(impl.config, sweep_dir / "multirun.yaml")
    directions = impl._get_directions()
    description = {
        "optimized_metric": str(metric),
        "direction": directions[0] if len(directions) == 1 else directions,
        "study_name": impl.study_name,
        "storage": impl.storage if isinstance(impl.storage, str) or impl.storage is None else str(impl.storage),
        "n_trials": impl.n_trials,
        "n_jobs": impl.n_jobs,
        "max_failure_rate": impl.max_failure_rate,
        "params": {name: describe_distribution(d) for name, d in distributions.items()},
        "fixed": {name: str(value) for name, value in fixed.items()},
    }
    path = sweep_dir / DESCRIPTION_FILE
    path.write_text(yaml.safe_dump(description, sort_keys=False))
    return path


def _no_trial_completed(impl: Any, err: Exception) -> bool:
    """Whether ``err`` is Optuna's complaint that a study has no best trial (its wording depends on the storage)."""
    if "No trials are completed" in str(err):
        return True
    from optuna.trial import TrialState

    study = _persisted_study(impl, tolerate=(Exception,))
    if study is None:
        return False
    return not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# -- the whole search ----------------------------------------------------------------------------------
def run_search(impl: Any, arguments: list[str]) -> None:
    """Run hydra-optuna-sweeper's ``OptunaSweeperImpl.sweep`` with the checks of the module docstring."""
    config = impl.config
    metric = config.get("optimized_metric")
    if not metric:
        raise SearchSpaceError("optimized_metric is not set: a search needs the name of a metric that train.py "
                               "returns (a key of results.json's metrics, e.g. best/val_elbo)")
    distributions, fixed = search_space(impl.params, arguments)
    if not distributions:
        raise SearchSpaceError("the search has no parameter to search: hydra.sweeper.params holds no range, "
                               "interval or choice")
    loader = impl.hydra_context.config_loader
    check_search_space(lambda overrides: loader.load_sweep_config(config, overrides), distributions, fixed)

    prepare_storage(impl.storage)
    write_search_description(impl, metric, distributions, fixed)
    resume(impl)
    launcher = TrialLauncher(impl.launcher, metric)
    impl.launcher = launcher
    try:
        impl.sweep(arguments)
    except BaseException as err:
        fail_running_trials(impl)
        if launcher.missing is not None:
            if err is launcher.missing:
                raise
            raise launcher.missing from err
        from_a_job = any(err is e for e in launcher.job_errors)
        if isinstance(err, ValueError) and not from_a_job and _no_trial_completed(impl, err):
            raise RuntimeError(f"no trial of the search completed (every one failed or diverged): see the jobs' "
                               f"logs under {impl.sweep_dir}") from err
        raise
    if launcher.missing is not None:
        raise launcher.missing
