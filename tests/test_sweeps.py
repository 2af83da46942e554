"""Sweeps: every experiment config composes and runs, multiruns through the joblib and submitit
launchers, make_tables on their output, two-process DDP on CPU, and bad sweep input."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from hsvae.cli import CONFIG_DIR
from hsvae.cli.plugins import missing_plugin
from hsvae.cli.registry import group_options
from hsvae.analysis.tables import main as make_tables
from hsvae.cli.train import train
from tests.conftest import FAST

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = group_options("experiment")
TINY = ["dataset.n_train=320", "dataset.n_val=100", "dataset.n_test=100", "trainer.max_epochs=1",
        "evaluation.ll.samples=5", "callbacks.progress_bar=null", "+trainer.enable_model_summary=false"]


def run_train(args: list[str], cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


#: The experiments whose dataset is generated, not read from HSVAE_DATA_DIR.
WITHOUT_DATA = {"synthetic_sphere"}


#: Slow tier, so that the default tier stays under 3 minutes: smiles (a Transformer's fast_dev_run takes long) and
#: latent_comparison (its fast_dev_run runs in the default tier already: tests/test_conv_vae.py).
HEAVY = {"smiles", "latent_comparison"}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=() if e in WITHOUT_DATA else
                                (pytest.mark.data, pytest.mark.slow) if e in HEAVY else pytest.mark.data)
                   for e in EXPERIMENTS]
)
def test_every_experiment_composes_and_runs(compose_train, request, experiment):
    """The sweep-composition test: each experiment's own settings, one fast_dev_run."""
    data = [] if experiment in WITHOUT_DATA else [f"paths.data_dir={request.getfixturevalue('data_dir')}"]
    cfg = compose_train([f"experiment={experiment}", *data, "+trainer.fast_dev_run=true", *FAST])
    assert cfg.hydra.sweeper.params, f"experiment={experiment} declares no sweep (hydra.sweeper.params)"
    metrics = train(cfg)
    assert metrics, experiment


def _sweep(tmp_path: Path, launcher: str, *extra: str) -> Path:
    sweep_dir = tmp_path / launcher
    proc = run_train(["-m", f"launcher={launcher}", "experiment=synthetic_sphere", *extra,
                      "variant=nvae,svae", "seed=0,1",
                      f"hydra.sweep.dir={sweep_dir}", *TINY])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir


def _check_table(sweep_dir: Path, tmp_path: Path) -> None:
    runs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    assert len(runs) == 4
    out = tmp_path / f"{sweep_dir.name}.md"
    assert make_tables([str(sweep_dir), "--metrics", "test/elbo", "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()[2:] if line.startswith("|")]
    assert len(rows) == 2
    for variant, count, cell, *_ in (map(str.strip, r) for r in rows):
        assert count == "2"
        own = [r["metrics"]["test/elbo"] for r in runs
               if r["config"]["latent"]["_target_"].endswith("VonMisesFisherLatent") == (variant == "svae")]
        mean = statistics.fmean(own)
        assert float(cell.split("±")[0]) == pytest.approx(mean, abs=0.006), (variant, own)


@pytest.mark.slow  # ~30 s: four trainings, two at a time through joblib
def test_joblib_multirun_and_table(tmp_path):
    sweep_dir = _sweep(tmp_path, "joblib", "logger=wandb")
    _check_table(sweep_dir, tmp_path)
    # W&B: one group for the whole sweep, each run tagged with its swept values
    from tests.support.wandb_offline import read_offline_run

    runs = [read_offline_run(p) for p in sorted(sweep_dir.glob("*/wandb/offline-run-*"))]
    assert len(runs) == 4
    assert {r["run"]["group"] for r in runs} == {f"synthetic_sphere-{sweep_dir.name}"}
    tags = [set(r["run"]["tags"]) for r in runs]
    assert {"variant=nvae", "variant=svae"} == {t for ts in tags for t in ts if t.startswith("variant=")}
    assert all("synthetic_sphere" in t and any(x.startswith("seed=") for x in t) for t in tags)


@pytest.mark.slow
def test_submitit_local_multirun_and_table(tmp_path):
    sweep_dir = _sweep(tmp_path, "submitit_local")
    _check_table(sweep_dir, tmp_path)


def test_make_tables_reports_missing_and_corrupt_runs(tmp_path, capsys):
    def job(name: str, overrides: list[str], results: dict | str | None):
        d = tmp_path / "sweep" / name
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if results is not None:
            (d / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))

    ok = {"format": 1, "metrics": {"test/elbo": -100.0}, "config": {"latent": {"dim": 2}}}
    job("0", ["latent=vmf", "seed=0"], ok)
    job("1", ["latent=vmf", "seed=1"], {**ok, "metrics": {"test/elbo": -102.0}})
    job("2", ["latent=gaussian", "seed=0"], "{not json")
    job("3", ["latent=gaussian", "seed=1"], {**ok, "format": 0})
    job("4", ["latent=gaussian", "seed=2"], None)
    job("6", ["latent=gaussian", "seed=3"], {"format": 1, "status": "failed", "exit_code": 1,
                                             "reason": "non-finite loss in steps 10-20", "config": None})
    out = tmp_path / "t.md"
    with pytest.warns(UserWarning):
        assert make_tables([str(tmp_path / "sweep"), "--metrics", "test/elbo", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| vmf | 2 | -101.00 ± 1.41 |" in text
    assert "| gaussian | 0 | — |" in text and "corrupt results.json" in text and "format 0" in text
    assert "no results.json" in text
    assert "6: failed: non-finite loss in steps 10-20" in text  # a failed run's record gives its reason

    # the same cell, different configs: refused rather than averaged
    job("5", ["latent=vmf", "seed=2"], {**ok, "config": {"latent": {"dim": 5}}})
    with pytest.warns(UserWarning):
        assert make_tables([str(tmp_path / "sweep"), "--metrics", "test/elbo"]) == 3
    assert "latent.dim" in capsys.readouterr().err


def test_make_tables_medians_and_wall_time(tmp_path):
    """The link-prediction table's extra columns: the median of an unscaled metric (the best epoch) and the mean
    wall time per run."""
    for seed, (auc, epoch, wall) in enumerate([(0.90, 80, 8.0), (0.92, 120, 10.0), (0.91, 100, 9.5)]):
        d = tmp_path / "sweep" / str(seed)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["latent=vmf", f"seed={seed}"]))
        (d / "results.json").write_text(json.dumps({"format": 1, "wall_time_s": wall, "config": {},
                                                    "metrics": {"test/auc": auc, "best/epoch": epoch}}))
    out = tmp_path / "t.md"
    assert make_tables([str(tmp_path / "sweep"), "--metrics", "test/auc", "--scale", "100", "--digits", "1",
                        "--medians", "best/epoch", "--wall-time", "--by", "latent", "--out", str(out)]) == 0
    header, _, row = out.read_text().splitlines()[:3]
    assert header == "| latent | runs | test/auc | median best/epoch | time/run | time | missing |"
    assert row == "| vmf | 3 | 91.0 ± 1.0 | 100 | 9.2 s | 27.5 s |  |"


def test_make_tables_without_results_fails(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert make_tables([str(tmp_path / "empty")]) != 0
    assert "no readable results.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "module,args,package,hint,unaffected",
    [
        ("joblib_launcher", ["-m", "launcher=joblib", "seed=0,1"], "hydra-joblib-launcher", "pip install",
         ["launcher=submitit_local"]),  # (submitit is installed in the dev extra)
        ("optuna", ["-m", "hparams_search=mnist_vae", "latent=vmf"], "'optuna'", ".[search]",
         ["hparams_search=null"]),
    ],
)
def test_missing_plugin_names_the_package(monkeypatch, module, args, package, hint, unaffected):
    """A launcher or a search whose Hydra plugin is not installed: the message names the package to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if module in name else real(name, *a))
    message = missing_plugin(args)
    assert package in message and hint in message
    assert missing_plugin(unaffected) is None


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_sweep_with_unknown_key_is_refused(tmp_path):
    proc = run_train(["-m", "latent.dimension=2,5", f"hydra.sweep.dir={tmp_path / 's'}", *TINY])
    assert proc.returncode != 0
    assert "latent.dimension" in proc.stderr
    assert not list((tmp_path / "s").glob("*/results.json"))


@pytest.mark.slow  # (a CLI subprocess, ~7 s: the default tier stays under 3 minutes)
def test_empty_sweep_is_an_error(tmp_path):
    proc = run_train(["-m", "seed=range(0)", f"hydra.sweep.dir={tmp_path / 's'}", *TINY])
    assert proc.returncode == 2
    assert "the sweep launched no job" in proc.stderr


@pytest.mark.slow  # ~25 s: two DDP processes
def test_ddp_two_cpu_processes_one_set_of_outputs(tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_train(["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "latent=gaussian",
                      f"hydra.run.dir={run_dir}", *TINY, "trainer.max_epochs=2"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((run_dir / "results.json").read_text())
    # 320 training points, 2 ranks x 160, batch 64 -> 3 steps per epoch on each rank
    assert res["global_step"] == 6
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "checkpoints", "csv", "plots", "progress.json", "results.json", "train.log"]
    assert len(list(run_dir.rglob("metrics.csv"))) == 1
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_slurm_launcher_config_requeues_and_resumes(compose_train):
    cfg = compose_train(["launcher=slurm", "+trainer.fast_dev_run=true"])
    assert cfg.auto_resume is True  # the default: a requeued job continues its folder
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.max_num_timeout > 0


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("dataset", "experiment", "hparams_search")
                                      for o in group_options(g)])
def test_optimized_metric_is_what_the_checkpoint_is_selected_by(compose_train, override):
    """The metric a sweep optimises is the one train.py reports for the protocol's checkpoint (``best/<monitor>``):
    a protocol that selects by another metric than the sweep reads makes every job fail after it finished."""
    cfg = compose_train([override])
    monitor = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
    assert monitor, f"{override}: no monitored checkpoint"
    assert cfg.optimized_metric == f"best/{monitor.replace('/', '_')}", (override, monitor, cfg.optimized_metric)


def test_dataset_configs_are_pure_data():
    """A dataset config describes data (``dataset``, ``data_spec``) and names the protocol it belongs to
    (``/task: <name>``, or another dataset config it extends); the protocol's model, trainer, callbacks, latent and
    selection live in conf/task/ alone."""
    for path in sorted((Path(CONFIG_DIR) / "dataset").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert set(raw) <= {"defaults", "dataset"}, (path.name, sorted(raw))  # data_spec.input_dim: from the data
        for entry in raw.get("defaults", []):
            assert (isinstance(entry, dict) and list(entry) == ["/task"]) or entry in group_options("dataset"), \
                (path.name, entry)


def test_every_dataset_selects_a_task_and_the_command_line_can_choose_another(compose_train):
    for dataset in group_options("dataset"):
        assert compose_train([f"dataset={dataset}"]).hydra.runtime.choices.task in group_options("task"), dataset
    cfg = compose_train(["dataset=mnist", "task=svae_synthetic"])
    assert cfg.data_spec.likelihood._target_.endswith("GaussianLikelihood") and cfg.trainer.max_epochs == 20


def test_a_planetoid_graph_is_its_name(compose_train):
    """cora.yaml adds only the graph's name to planetoid.yaml: the generic option given the name composes the same
    run (what a new Planetoid-style graph's one config file relies on; the feature count is read from the data)."""
    named = compose_train(["dataset=cora"])
    generic = compose_train(["dataset=planetoid", "dataset.name=cora"])
    for key in ("dataset", "data_spec", "model", "latent", "trainer", "callbacks"):
        assert OmegaConf.to_container(named[key]) == OmegaConf.to_container(generic[key]), key
    assert named.optimized_metric == generic.optimized_metric == "best/val_auc_ap"
