"""Hyperparameter searches (``hparams_search=``, hsvae's Optuna sweeper): a search through the joblib launcher, W&B
grouping, pruning, a failing trial, a NaN metric, an unknown parameter, a missing metric, an interrupted search
continued, two processes on one study, the samplers, multi-objective searches, the search-space syntax, and the
summary script."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hsvae.cli import CONFIG_DIR
from hsvae.cli.registry import group_options
from hsvae.analysis.search_summary import load_search
from hsvae.analysis.search_summary import main as summarize
from tests.test_sweeps import REPO, TINY, run_train

optuna = pytest.importorskip("optuna", reason="the `search` extra is part of `dev`")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402

from hsvae.sweeps import study as studies  # noqa: E402
from hsvae.utils.errors import MissingMetricError, SearchSpaceError  # noqa: E402
from hsvae.sweeps.optuna_search import run_search  # noqa: E402
from hsvae.sweeps.search_space import parse, probe_overrides, search_space  # noqa: E402

SEARCHES = group_options("hparams_search")
#: The synthetic search with a tiny budget: 2 epochs of 320 points per trial, no test stage.
SMALL = ["hparams_search=synthetic", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
         *TINY, "trainer.max_epochs=2"]


def _study(sweep_dir: Path):
    description = yaml.safe_load((sweep_dir / "search.yaml").read_text())
    return optuna.load_study(study_name=description["study_name"], storage=f"sqlite:///{sweep_dir}/optuna.db")


def _job_values(sweep_dir: Path) -> dict[int, float]:
    """Each finished job's own optimized metric, from its results.json."""
    out = {}
    for path in sweep_dir.glob("*/results.json"):
        results = json.loads(path.read_text())
        if results["status"] != "finished":  # a failed trial's record: its reason, no metrics
            continue
        recorded = results["optimized_metric"]
        assert recorded["name"] == "best/val_elbo"
        out[int(path.parent.name)] = recorded["value"]
    return out


@pytest.mark.slow  # ~45 s: four trials, two at a time through joblib
def test_search_through_joblib_launcher_and_summary(tmp_path, capsys):
    sweep_dir = tmp_path / "search"
    proc = run_train(["-m", *SMALL, "launcher=joblib", "logger=wandb", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]

    # four trials, each with its own parameters, all recorded in the persisted study
    study = _study(sweep_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]

    # the sweeper's best trial is the best of the runs' own results.json, and the job of that trial
    values = _job_values(sweep_dir)
    assert len(values) == 4
    best_job = max(values, key=values.get)
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(values[best_job], rel=1e-12)
    assert study.best_trial.number == best_job  # trial k ran in job directory k
    overrides = yaml.safe_load((sweep_dir / str(best_job) / ".hydra" / "overrides.yaml").read_text())
    lr = float(next(o for o in overrides if o.startswith("model.optimizer.lr=")).split("=")[1])
    assert lr == pytest.approx(result["best_params"]["model.optimizer.lr"], rel=1e-12)
    assert 1e-4 <= lr <= 1e-2

    # the summary reports the same trial, and plots
    capsys.readouterr()
    assert summarize([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert f"best trial: {best_job}  best/val_elbo = {values[best_job]!r}" in out
    assert "(the same trial)" in out and "4 completed" in out
    assert (sweep_dir / "search_summary.png").stat().st_size > 10_000

    # W&B: one group for the whole search (its study), each trial's parameters as tags and config
    from tests.support.wandb_offline import read_offline_run

    runs = [read_offline_run(p) for p in sorted(sweep_dir.glob("*/wandb/offline-run-*"))]
    assert len(runs) == 4
    assert {r["run"]["group"] for r in runs} == {f"synthetic_vmf_d2-{sweep_dir.name}"}
    for run in runs:
        search = json.loads(run["config"]["search"])
        assert search["study"] == "synthetic_vmf_d2"
        lr = search["params"]["model.optimizer.lr"]
        assert isinstance(lr, float) and f"model.optimizer.lr={lr!r}" in run["run"]["tags"]
        assert any(t.startswith("model.warmup_epochs=") for t in run["run"]["tags"])
    assert {json.loads(r["config"]["search"])["trial"] for r in runs} == {0, 1, 2, 3}


@pytest.mark.slow  # ~13 s: a four-trial search (test_nan_metric_is_a_failed_trial covers the logic without training)
def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, capsys):
    """Job 0 gets an invalid batch size (an interpolation on the job number), so exactly one trial fails."""
    sweep_dir = tmp_path / "search"
    proc = run_train(["-m", *SMALL, 'dataset.batch_size="${hsvae.if_le:${hydra:job.num},0,0,64}"',
                      f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "dataset.batch_size must be a positive integer, got 0" in proc.stderr + proc.stdout
    assert [t.state.name for t in _study(sweep_dir).trials] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    values = _job_values(sweep_dir)
    assert sorted(values) == [1, 2, 3]
    assert json.loads((sweep_dir / "0" / "results.json").read_text())["status"] == "failed"
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(values.values()), rel=1e-12)

    capsys.readouterr()
    assert summarize([str(sweep_dir), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "3 completed, 0 pruned, 1 failed" in out
    assert "| 0 | failed | — |" in out and "failed: dataset.batch_size must be a positive integer, got 0" in out


@pytest.mark.slow  # (a multirun in subprocesses, ~7 s: the default tier stays under 3 minutes)
def test_a_missing_metric_stops_the_search_after_the_first_batch(tmp_path):
    """Even with every failure tolerated: a metric no run produces is a mistake, not a failed trial."""
    sweep_dir = tmp_path / "search"
    proc = run_train(["-m", *SMALL, "optimized_metric=best/val_nope", "hydra.sweeper.max_failure_rate=1.0",
                      f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 2  # a usage error, in one line
    assert "error: optimized_metric='best/val_nope' is not among this run's metrics" in proc.stderr
    assert "best/val_elbo" in proc.stderr.splitlines()[-1]  # it lists the metrics there are
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1"]
    # the trials asked for the refused second batch are not left RUNNING
    assert all(t.state.name == "FAIL" for t in _study(sweep_dir).trials)


@pytest.mark.slow  # (a multirun in subprocesses, ~7 s: the default tier stays under 3 minutes)
def test_unknown_parameter_is_refused_before_the_first_trial(tmp_path):
    sweep_dir = tmp_path / "search"
    proc = run_train(["-m", *SMALL, "model.optimizer.lrr=tag(log, interval(1e-4, 1e-2))",
                      f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()
    assert any(line.startswith("error: the search space") and "unknown parameter or value 'model.optimizer.lrr'"
               in line for line in last), proc.stderr[-3000:]
    assert not sweep_dir.exists()  # no trial, no study


@pytest.mark.slow  # two small searches in subprocesses
def test_a_search_killed_mid_batch_continues_without_duplicate_trial_numbers(tmp_path):
    """SIGTERM to the search's process while a batch trains (joblib): the batch's trials are failed as interrupted;
    the same command again runs as many new trials (new numbers, new job folders) and completes n_trials."""
    sweep_dir = tmp_path / "search"
    command = [sys.executable, "train.py", "-m", *SMALL, "trainer.max_epochs=40", "launcher=joblib",
               f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not all((sweep_dir / job / "checkpoints" / "last.ckpt").is_file() for job in ("0", "1")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "timeout"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    trials = _study(sweep_dir).get_trials()
    assert [(t.state.name, t.user_attrs.get("interrupted")) for t in trials] == [("FAIL", True)] * 2

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _study(sweep_dir).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"] + ["COMPLETE"] * 4
    assert len({t.number for t in trials}) == 6
    assert sorted(int(p.name) for p in sweep_dir.iterdir() if p.name.isdigit()) == [0, 1, 2, 3, 4, 5]


@pytest.mark.slow  # a two-trial search in a subprocess
def test_a_trial_whose_curve_is_worse_is_pruned(tmp_path, capsys):
    """The study already holds a trial whose validation ELBO was 0 at every epoch (no run reaches it): the median
    pruner stops the new trial after its first epoch; the study says PRUNED, its results.json `status: pruned`, its
    checkpoint is kept, and the summary counts it."""
    sweep_dir = tmp_path / "search"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="synthetic_vmf_d2", storage=f"sqlite:///{sweep_dir}/optuna.db",
                                direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        params={"model.optimizer.lr": 1e-3, "model.warmup_epochs": 0},
        distributions={"model.optimizer.lr": FloatDistribution(1e-4, 1e-2, log=True),
                       "model.warmup_epochs": CategoricalDistribution((0, 2, 5, 10))},
        value=0.0, intermediate_values={epoch: 0.0 for epoch in range(6)}))
    proc = run_train(["-m", *SMALL, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", "trainer.max_epochs=6",
                      "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.warmup_epochs=1",
                      "model.warmup_epochs=0", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    trials = _study(sweep_dir).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].user_attrs["pruned_at_epoch"] == 0 and list(trials[1].intermediate_values) == [0]
    record = json.loads((sweep_dir / "0" / "results.json").read_text())
    assert record["status"] == "pruned" and record["epochs"] == 1, record.get("reason")
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    assert summarize([str(sweep_dir), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "0 completed, 1 pruned, 0 failed" in out and "| 0 | pruned |" in out


# -- without training -----------------------------------------------------------------------------------
class FakeLauncher:
    """Returns a value per job number (a number, a list, or an exception: a failed job); no process, no training.
    ``prune``: job numbers whose trial the run marks as pruned (as hsvae/training/pruning.py does)."""

    def __init__(self, values: dict[int, object], storage: str | None = None, prune: tuple[int, ...] = ()) -> None:
        self.values, self.calls, self.storage, self.prune = values, 0, storage, prune
        self.overrides: list[list[str]] = []

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        self.calls += 1
        returns = []
        for i, overrides in enumerate(job_overrides):
            self.overrides.append(list(overrides))
            job = initial_job_idx + i
            value = self.values[job]
            if isinstance(value, BaseException) and not isinstance(value, Exception):
                raise value  # an interruption of the whole batch
            if job in self.prune:
                number = int(next(o for o in overrides if o.startswith("trial=")).split("=")[1])
                study = optuna.load_study(study_name="fake", storage=self.storage)
                trial = studies.trial_of_run(study, number)
                trial.report(-100.0, 0)
                trial.set_user_attr(studies.PRUNED_AT, 0)
            failed = isinstance(value, Exception)
            returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                                     _return_value=value))
        return returns


def search_config(tmp_path: Path, n_trials: int = 4, max_failure_rate: float = 0.5, storage: str | None = "sqlite",
                  metric: str | list[str] = "m", **sweeper) -> OmegaConf:
    if storage == "sqlite":
        storage = f"sqlite:///{tmp_path}/sweep/optuna.db"
    settings = {"direction": "maximize", "study_name": "fake", "storage": storage, "n_trials": n_trials, "n_jobs": 2,
                "max_failure_rate": max_failure_rate, "sampler": {"name": "random", "seed": 0},
                "pruner": {"name": "none"}, "params": {"x": "interval(0, 1)"}, **sweeper}
    return OmegaConf.create({"optimized_metric": metric, "callbacks": {"model_checkpoint": {"monitor": "val/m", "mode": "max"}},
                             "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}, "sweeper": settings}})


def search(tmp_path: Path, values: dict[int, object], arguments=(), prune=(), **settings) -> FakeLauncher:
    config = search_config(tmp_path, **settings)
    launcher = FakeLauncher(values, config.hydra.sweeper.storage, prune)
    run_search(config, launcher, lambda cfg, overrides: cfg, list(arguments))
    return launcher


def states(tmp_path: Path) -> list[str]:
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    return [t.state.name for t in study.get_trials()]


def test_nan_metric_is_a_failed_trial(tmp_path):
    search(tmp_path, {0: -3.0, 1: math.nan, 2: -1.0, 3: math.inf})
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    assert states(tmp_path) == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert study.best_value == -1.0
    assert "diverged" in study.trials[1].user_attrs["failure"]
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert result["best_value"] == -1.0 and result["trials"] == {"complete": 2, "fail": 2}


def test_each_job_gets_its_trial_number_and_sampled_values(tmp_path):
    launcher = search(tmp_path, {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}, arguments=["latent=vmf"])
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    for trial, overrides in zip(study.get_trials(), launcher.overrides):
        assert overrides == ["latent=vmf", f"x={trial.params['x']!r}", f"trial={trial.number}"]


def test_missing_metric_stops_even_when_failures_are_tolerated(tmp_path):
    launcher = FakeLauncher({0: MissingMetricError("no m"), 1: MissingMetricError("no m")})
    config = search_config(tmp_path, max_failure_rate=1.0)
    with pytest.raises(MissingMetricError, match="no m"):
        run_search(config, launcher, lambda cfg, overrides: cfg, [])
    assert launcher.calls == 1
    assert set(states(tmp_path)) == {"FAIL"}


def test_too_many_failures_in_a_batch_stop_the_search(tmp_path):
    """max_failure_rate is per batch: 2 of 2 failures > 0.5 stops before the second batch, naming the error."""
    with pytest.raises(RuntimeError, match="2 of 2 trials of a batch failed .* the first: crashed"):
        search(tmp_path, {0: ValueError("crashed"), 1: ValueError("crashed")})
    assert states(tmp_path) == ["FAIL", "FAIL"]


def test_every_failed_trial_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="no trial of the search completed"):
        search(tmp_path, {0: math.nan, 1: math.nan}, n_trials=2, max_failure_rate=1.0)


def test_a_pruned_run_is_a_pruned_trial_and_counts(tmp_path):
    search(tmp_path, {0: -1.0, 1: -5.0, 2: -2.0, 3: -0.5}, prune=(1,),
           pruner={"name": "median", "warmup_epochs": 0, "n_startup_trials": 1})
    assert states(tmp_path) == ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"]
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert result["trials"] == {"complete": 3, "pruned": 1} and result["best_value"] == -0.5


def test_a_search_interrupted_mid_batch_continues_without_reusing_a_trial_number(tmp_path):
    """The batch's trials are failed as interrupted (not counted); the same search again runs what is missing, in
    job folders after the old ones, with new trial numbers."""
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, {0: -2.0, 1: -1.0, 2: KeyboardInterrupt(), 3: -3.0}, n_trials=4)
    assert states(tmp_path) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    for job in ("0", "1"):
        (tmp_path / "sweep" / job).mkdir()
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    study.ask().set_user_attr(studies.HOST, socket.gethostname())  # left running by a process that died here
    launcher = search(tmp_path, {2: -0.5, 3: -0.25}, n_trials=4)
    trials = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.user_attrs.get("interrupted") for t in trials[2:5]] == [True, True, True]
    assert [o[-1] for o in launcher.overrides] == ["trial=5", "trial=6"]
    assert len({t.number for t in trials}) == len(trials)
    # a finished study run again: nothing more to run
    assert search(tmp_path, {}, n_trials=4).calls == 0


def test_a_multi_objective_search_keeps_its_pareto_front(tmp_path, capsys):
    values = {0: [-1.0, 5.0], 1: [-2.0, 1.0], 2: [-3.0, 3.0], 3: [-0.5, 9.0]}
    search(tmp_path, values, direction=["maximize", "minimize"], metric=["m", "wall_time_s"])
    result = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert sorted(entry["trial"] for entry in result["pareto_front"]) == [0, 1, 3]  # trial 2 is dominated by 1
    with pytest.raises(SearchSpaceError, match="Optuna prunes single-objective studies only"):
        search(tmp_path / "other", values, direction=["maximize", "minimize"], metric=["m", "wall_time_s"],
               pruner={"name": "median"})


def test_the_pruner_needs_a_storage_and_a_monitor_of_the_same_direction(tmp_path):
    with pytest.raises(SearchSpaceError, match="needs a storage the runs can reach"):
        search(tmp_path, {}, storage=None, pruner={"name": "median"})
    with pytest.raises(SearchSpaceError, match="the runs report val/m .mode max. each epoch, but the search is to "
                                               "minimize"):
        search(tmp_path, {}, direction="minimize", pruner={"name": "hyperband"})


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random"])
def test_every_sampler_is_selectable_by_name(tmp_path, sampler):
    search(tmp_path, {i: -float(i) for i in range(4)}, sampler={"name": sampler, "seed": 0})
    assert states(tmp_path) == ["COMPLETE"] * 4
    with pytest.raises(SearchSpaceError, match="sampler.name='nope': one of tpe, gp, cmaes, random, nsga2"):
        search(tmp_path / "other", {}, sampler={"name": "nope"})


def test_a_journal_storage_and_its_study(tmp_path):
    storage = f"journal://{tmp_path}/shared/optuna.journal"
    search(tmp_path, {i: float(i) for i in range(4)}, storage=storage)
    study = optuna.load_study(study_name="fake", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(f"{tmp_path}/shared/optuna.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4 and study.best_value == 3.0


TWO_PROCESSES = """
import sys, time
from pathlib import Path
from omegaconf import OmegaConf
from hydra.core.utils import JobReturn, JobStatus
from hsvae.sweeps.optuna_search import run_search

class Sleepy:
    def launch(self, job_overrides, initial_job_idx):
        # a barrier: no trial ends before both processes are in the search (a slow start would leave one idle)
        (folder.parent / f"in_{folder.name}").touch()
        deadline = time.time() + 120
        while len(list(folder.parent.glob("in_*"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=float(len(o))) for o in job_overrides]

folder, storage = Path(sys.argv[1]), sys.argv[2]
config = OmegaConf.create({"optimized_metric": "m", "hydra": {"sweep": {"dir": str(folder)}, "sweeper": {
    "direction": "maximize", "study_name": "shared", "storage": storage, "n_trials": 11, "n_jobs": 2,
    "max_failure_rate": 0.5, "sampler": {"name": "random"}, "pruner": {"name": "none"},
    "params": {"x": "interval(0, 1)"}}}})
run_search(config, Sleepy(), lambda cfg, overrides: cfg, [])
"""


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_processes_on_one_study_complete_n_trials_exactly(tmp_path, kind):
    """Two searches (say, two nodes of a SLURM array) on one study: 11 trials in all, none lost or doubled."""
    storage = f"journal://{tmp_path}/optuna.journal" if kind == "journal" else f"sqlite:///{tmp_path}/optuna.db"
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, str(tmp_path / f"node{i}"), storage],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=studies.open_storage(storage))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 11
    assert sorted(t.number for t in trials) == list(range(11))
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in procs}  # both worked on it


@pytest.mark.parametrize("item, expected", [
    ("a=choice(1, 2, 3)", CategoricalDistribution((1, 2, 3))),
    ("a=1,2,3", CategoricalDistribution((1, 2, 3))),
    ("a=choice('[256,128]', '[512,256]')", CategoricalDistribution(("[256,128]", "[512,256]"))),
    ("a=range(2, 10, 2)", IntDistribution(2, 8, step=2)),
    ("a=range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("a=interval(1e-4, 1e-2)", FloatDistribution(1e-4, 1e-2)),
    ("a=tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
    ("a=int(interval(2, 64))", IntDistribution(2, 64)),
    ("a=tag(log, int(interval(2, 64)))", IntDistribution(2, 64, log=True)),
])
def test_the_search_space_syntax(item, expected):
    distributions, fixed = parse([item])
    assert fixed == {}
    got = distributions["a"]
    assert type(got) is type(expected)
    if isinstance(expected, CategoricalDistribution):
        assert got.choices == expected.choices
    else:
        assert (got.low, got.high, got.log, got.step) == pytest.approx((expected.low, expected.high, expected.log,
                                                                          expected.step))


@pytest.mark.parametrize("item, message", [
    ("a=interval(2, 1)", "needs low < high"),
    ("a=tag(log, interval(0, 1))", "needs low > 0"),
    ("a=tag(log, choice(1, 2))", "applies to an interval or a range"),
    ("a=range(5, 1)", "is empty"),
])
def test_a_search_space_optuna_cannot_sample_is_refused_by_name(item, message):
    with pytest.raises(SearchSpaceError, match=message):
        parse([item])


def test_probe_overrides_cover_every_choice_and_both_ends():
    distributions, fixed = search_space(
        {"a": "choice(1, 2, 3)", "b": "tag(log, interval(1e-4, 1e-2))", "c": "choice(x, y)"}, ["latent=vmf", "c=y"])
    assert fixed == {"latent": "vmf", "c": "y"} and set(distributions) == {"a", "b"}  # the command line wins
    probes = probe_overrides(distributions, fixed)
    assert len(probes) == 3
    assert all(p[:2] == ["latent=vmf", "c=y"] for p in probes)
    assert {o for p in probes for o in p if o.startswith("a=")} == {"a=1", "a=2", "a=3"}
    assert {o for p in probes for o in p if o.startswith("b=")} == {"b=0.0001", "b=0.01"}


@pytest.mark.parametrize("name", SEARCHES)
def test_every_search_config_composes_with_its_whole_space(name):
    """Each conf/hparams_search file: an Optuna search (direction, seeded sampler, persisted study, a metric)
    whose every choice and range end composes, as the sweeper checks before the first trial."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
            sweeper = cfg.hydra.sweeper
            assert sweeper._target_.endswith("OptunaSearchSweeper")
            assert sweeper.direction in ("maximize", "minimize") and cfg.optimized_metric
            assert sweeper.sampler.seed is not None and sweeper.study_name
            assert OmegaConf.to_container(sweeper, resolve=False)["storage"].startswith("sqlite:///${hydra.sweep.dir}")
            assert sweeper.n_trials >= sweeper.n_jobs >= 1 and 0 <= sweeper.max_failure_rate < 1
            distributions, fixed = search_space(sweeper.params, [f"hparams_search={name}"])
            assert len(distributions) >= 2
            for probe in probe_overrides(distributions, fixed):
                trial = compose("train", overrides=probe)
                for item in probe[1:]:
                    key, _, value = item.partition("=")
                    assert str(OmegaConf.select(trial, key)).replace(" ", "") == value.replace(" ", ""), item
                if name == "mnist_vae":  # the decoder mirrors the searched encoder widths
                    net = trial.model.net
                    assert list(net.decoder.hidden) == list(net.encoder.hidden)[::-1]
    finally:
        GlobalHydra.instance().clear()


def test_summary_of_a_directory_that_is_not_a_search(tmp_path, capsys):
    (tmp_path / "multirun" / "0" / ".hydra").mkdir(parents=True)
    assert summarize([str(tmp_path / "multirun")]) == 2
    assert "is not the directory of a hyperparameter search" in capsys.readouterr().err
    assert summarize([str(tmp_path / "nowhere")]) == 2
    with pytest.raises(ValueError, match="not the directory of a hyperparameter search"):
        load_search(tmp_path)



def test_the_summary_of_a_multi_objective_search_prints_and_draws_its_pareto_front(tmp_path, capsys):
    values = {0: [-1.0, 5.0], 1: [-2.0, 1.0], 2: [-3.0, 3.0], 3: [-0.5, 9.0]}
    search(tmp_path, values, direction=["maximize", "minimize"], metric=["m", "wall_time_s"])
    sweep_dir = tmp_path / "sweep"
    for job, (m, seconds) in values.items():  # each job's record, as train.py writes it
        (sweep_dir / str(job) / ".hydra").mkdir(parents=True)
        (sweep_dir / str(job) / ".hydra" / "overrides.yaml").write_text(f"- x={job / 10}\n- trial={job}\n")
        (sweep_dir / str(job) / "results.json").write_text(json.dumps({
            "status": "finished", "metrics": {"m": m}, "wall_time_s": seconds,
            "optimized_metric": {"name": ["m", "wall_time_s"], "value": [m, None]}}))
    capsys.readouterr()
    assert summarize([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "maximize m, minimize wall_time_s" in out and "Pareto front: 3 trials" in out
    assert "| 2 | complete | -3 | 3 |" in out and "| 1 | front | -2 | 1 |" in out
    assert (sweep_dir / "search_summary.png").stat().st_size > 10_000
