"""Hyperparameter searches (``hparams_search=``, Hydra's Optuna sweeper through hsvae's sweeper): a search
through the joblib launcher, W&B grouping, a failing trial, a NaN metric, an unknown parameter, a missing
metric, resuming an interrupted study, and the summary script."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from hsvae.cli import CONFIG_DIR
from hsvae.cli.registry import group_options
from hsvae.sweeps.optuna_search import probe_overrides, search_space
from hsvae.analysis.search_summary import load_search
from hsvae.analysis.search_summary import main as summarize
from tests.test_sweeps import TINY, run_train

optuna = pytest.importorskip("optuna", reason="the `search` extra (hydra-optuna-sweeper) is part of `dev`")

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
    assert "3 completed, 1 failed" in out
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


@pytest.mark.slow
def test_interrupted_search_resumes(tmp_path):
    """A search restarted into its sweep directory: the trial that was running is recorded as failed, only the
    missing trials run, and their job directories do not overwrite the old ones."""
    sweep_dir = tmp_path / "search"
    first = run_train(["-m", *SMALL, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}"])
    assert first.returncode == 0, first.stderr[-4000:]
    study = _study(sweep_dir)
    study.ask()  # a trial whose batch was interrupted: RUNNING forever, without a job directory
    second = run_train(["-m", *SMALL, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep_dir}"])
    assert second.returncode == 0, second.stderr[-4000:]
    states = [t.state.name for t in _study(sweep_dir).trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert sorted(p.parent.name for p in sweep_dir.glob("*/results.json")) == ["0", "1", "3"]
    assert "resuming study 'synthetic_vmf_d2': 3 trials recorded, 1 of 4 to run" in second.stderr + second.stdout


# -- without training -----------------------------------------------------------------------------------
class _FakeLauncher:
    """Returns a fixed value per job number (no process, no training)."""

    def __init__(self, values: dict[int, object]) -> None:
        self.values, self.calls = values, 0

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        self.calls += 1
        returns = []
        for i, overrides in enumerate(job_overrides):
            value = self.values[initial_job_idx + i]
            failed = isinstance(value, Exception)
            returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                                     _return_value=value))
        return returns


def _impl(tmp_path: Path, values: dict[int, object], n_trials: int = 4, max_failure_rate: float = 0.5):
    from types import SimpleNamespace

    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    impl = OptunaSweeperImpl(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize",
                             storage=f"sqlite:///{tmp_path}/sweep/optuna.db", study_name="fake", n_trials=n_trials,
                             n_jobs=2, max_failure_rate=max_failure_rate, search_space=None, custom_search_space=None,
                             params=OmegaConf.create({"x": "interval(0, 1)"}))
    impl.config = OmegaConf.create({"optimized_metric": "m", "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    impl.hydra_context = SimpleNamespace(config_loader=SimpleNamespace(load_sweep_config=lambda cfg, overrides: cfg))
    impl.launcher = _FakeLauncher(values)
    impl.sweep_dir = str(tmp_path / "sweep")
    impl.job_idx = 0
    return impl


def test_nan_metric_is_a_failed_trial(tmp_path):
    """(hydra-optuna-sweeper alone crashes on a NaN: Optuna refuses it, and then refuses to fail the trial.)"""
    from hsvae.sweeps.optuna_search import run_search

    impl = _impl(tmp_path, {0: -3.0, 1: math.nan, 2: -1.0, 3: math.inf})
    run_search(impl, [])
    study = optuna.load_study(study_name="fake", storage=impl.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert study.best_value == -1.0
    assert yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())["best_value"] == -1.0


def test_missing_metric_stops_even_when_failures_are_tolerated(tmp_path):
    from hsvae.sweeps.optuna_search import MissingMetricError, run_search

    impl = _impl(tmp_path, {0: MissingMetricError("no m"), 1: MissingMetricError("no m")}, max_failure_rate=1.0)
    with pytest.raises(MissingMetricError, match="no m"):
        run_search(impl, [])
    assert impl.launcher.launcher.calls == 1
    study = optuna.load_study(study_name="fake", storage=impl.storage)
    assert {t.state.name for t in study.trials} == {"FAIL"}


def test_too_many_failures_in_a_batch_stop_the_search(tmp_path):
    """max_failure_rate is per batch (the plugin's rule): 2 of 2 failures > 0.5 stops before the second batch."""
    from hsvae.sweeps.optuna_search import run_search

    impl = _impl(tmp_path, {0: ValueError("crashed"), 1: ValueError("crashed")})
    with pytest.raises(ValueError, match="crashed"):
        run_search(impl, [])
    assert impl.launcher.launcher.calls == 1
    study = optuna.load_study(study_name="fake", storage=impl.storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_resume_runs_only_the_missing_trials_after_the_old_jobs(tmp_path):
    """The resume logic of test_interrupted_search_resumes (slow, with training), with a fake launcher."""
    from hsvae.sweeps.optuna_search import run_search

    run_search(_impl(tmp_path, {0: -2.0, 1: -1.0}, n_trials=2), [])
    for job in ("0", "1"):
        (tmp_path / "sweep" / job).mkdir()
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{tmp_path}/sweep/optuna.db")
    study.ask()  # interrupted while running: no job directory, never told
    impl = _impl(tmp_path, {3: -0.5}, n_trials=4)
    run_search(impl, [])
    study = optuna.load_study(study_name="fake", storage=impl.storage)  # (this process caches trial states)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert impl.launcher.launcher.calls == 1 and impl.job_idx == 4  # job 3 (trial 3): after the old ones
    assert study.best_value == -0.5
    # a finished study restarted: nothing more to run
    impl = _impl(tmp_path, {}, n_trials=4)
    run_search(impl, [])
    assert impl.launcher.launcher.calls == 0
    assert len(optuna.load_study(study_name="fake", storage=impl.storage).trials) == 4


def test_every_failed_trial_is_a_clear_error(tmp_path):
    from hsvae.sweeps.optuna_search import run_search

    impl = _impl(tmp_path, {0: math.nan, 1: math.nan}, n_trials=2, max_failure_rate=1.0)
    with pytest.raises(RuntimeError, match="no trial of the search completed"):
        run_search(impl, [])


def test_sqlalchemy_2_is_refused_by_name(monkeypatch, tmp_path):
    import sqlalchemy

    from hsvae.sweeps.optuna_search import prepare_storage

    monkeypatch.setattr(sqlalchemy, "__version__", "2.0.30")
    with pytest.raises(RuntimeError, match=r"sqlalchemy>=1.4,<2"):
        prepare_storage(f"sqlite:///{tmp_path}/a/optuna.db")
    assert (tmp_path / "a").is_dir()  # the folder is made for SQLite either way
    prepare_storage(None)


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

