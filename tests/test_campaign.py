"""A table's campaign: runs resumed digit for digit, sweeps continued in their folder, a time budget, records.

The sweep tests run train.py as a user does (a subprocess, the real command line); the small runs take seconds.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hsvae.cli.train import train
from tests.conftest import FAST, compose_config

ROOT = Path(__file__).resolve().parents[1]
#: a vMF run on the synthetic sphere: the sampler draws from the generators every step
SMALL = ["dataset.n_train=640", "callbacks.early_stopping=null", "evaluation.ll.samples=10", *FAST]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def csv_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))


def interrupt_at(epoch: int) -> list[str]:
    return [f"+callbacks.interrupt._target_=tests.support.interrupt.InterruptAt", f"+callbacks.interrupt.epoch={epoch}"]


def test_a_resumed_run_is_the_uninterrupted_run_digit_for_digit(tmp_path):
    """Interrupted in epoch 2 of 4 and resumed in place from last.ckpt: every metric and every logged row is the
    uninterrupted run's exactly (the sampler's and the binarisation's generators come back from the checkpoint)."""
    common = [*SMALL, "trainer.max_epochs=4"]
    train(compose_config("train", common, tmp_path / "full"))
    with pytest.raises(KeyboardInterrupt):
        train(compose_config("train", [*common, *interrupt_at(2)], tmp_path / "cut"))
    assert results(tmp_path / "cut")["status"] == "interrupted"
    first_attempt = json.loads((tmp_path / "cut" / "progress.json").read_text())
    assert first_attempt["epochs"] == 2
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    begun = time.time()
    train(compose_config("train", [*common, f"ckpt_path={last}"], tmp_path / "cut"))
    second_attempt = time.time() - begun
    full, resumed = results(tmp_path / "full"), results(tmp_path / "cut")
    assert resumed["status"] == "finished" and resumed["attempts"] == 2 and resumed["epochs"] == 4
    assert resumed["metrics"] == full["metrics"]  # exactly, every key
    assert csv_rows(tmp_path / "cut") == csv_rows(tmp_path / "full")
    # the wall time is the work's: the first attempt's two epochs and the second attempt, not the second alone
    assert resumed["wall_time_s"] >= first_attempt["elapsed_s"] + 0.5 * second_attempt


@pytest.mark.slow  # two small fits (the default tier stays under 3 minutes)
def test_without_the_random_states_a_resumed_run_draws_other_noise(tmp_path):
    """The check above can fail: a checkpoint stripped of the random states resumes into other draws."""
    import torch

    common = [*SMALL, "trainer.max_epochs=3"]
    train(compose_config("train", common, tmp_path / "full"))
    with pytest.raises(KeyboardInterrupt):
        train(compose_config("train", [*common, *interrupt_at(1)], tmp_path / "cut"))
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    checkpoint["callbacks"] = {k: v for k, v in checkpoint["callbacks"].items() if "RunState" not in k}
    torch.save(checkpoint, last)
    train(compose_config("train", [*common, f"ckpt_path={last}"], tmp_path / "cut"))
    assert results(tmp_path / "cut")["metrics"]["test/elbo"] != results(tmp_path / "full")["metrics"]["test/elbo"]


def sweep(folder: Path, *extra: str, seeds: str = "0,1") -> list[str]:
    """``python train.py -m`` of small vMF runs with these seeds into ``folder``."""
    return [sys.executable, "train.py", "-m", "latent=vmf", f"seed={seeds}", *SMALL, f"hydra.sweep.dir={folder}",
            *extra]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def wait_for_epochs(progress: Path, epochs: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        try:
            if json.loads(progress.read_text())["epochs"] >= epochs:
                return
        except (OSError, ValueError, KeyError):
                pass  # not written yet, or being replaced
        time.sleep(0.05)
    raise AssertionError(f"{progress} did not reach {epochs} epochs (sweep exited {proc.poll()})")


@pytest.mark.slow
def test_a_sweep_killed_mid_way_and_run_again_finishes_as_the_uninterrupted_sweep(tmp_path):
    """Ctrl-C while the second job trains; the same command again: the first run is kept as it was (not rerun),
    the second resumes from its last epoch, and both equal an uninterrupted sweep's runs, each epoch logged once."""
    reference = run(sweep(tmp_path / "reference", "trainer.max_epochs=4"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    folder = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(sweep(folder, "trainer.max_epochs=4"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for_epochs(folder / "1" / "progress.json", 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert results(folder / "0")["status"] == "finished" and results(folder / "1")["status"] == "interrupted"
    first = (folder / "0" / "results.json").stat().st_mtime_ns

    again = run(sweep(folder, "trainer.max_epochs=4"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stderr
    assert (folder / "0" / "results.json").stat().st_mtime_ns == first  # untouched
    for job in ("0", "1"):
        assert results(folder / job)["metrics"] == results(tmp_path / "reference" / job)["metrics"], job
        assert csv_rows(folder / job) == csv_rows(tmp_path / "reference" / job), job
    assert results(folder / "1")["attempts"] == 2


@pytest.mark.slow  # three sweeps as subprocesses
def test_a_sweep_continued_with_other_parameters_is_refused(tmp_path):
    folder = tmp_path / "sweep"
    first = run(sweep(folder, "trainer.max_epochs=1", seeds="0"))
    assert first.returncode == 0, first.stderr[-3000:]
    other = run(sweep(folder, "trainer.max_epochs=2", seeds="0"))
    assert other.returncode != 0
    assert "already holds a run of other overrides (trainer.max_epochs: trainer.max_epochs=1 there, " \
           "trainer.max_epochs=2 here)" in " ".join(other.stderr.split())
    # a different launcher or budget is the same run: continued (here: already finished)
    same = run(sweep(folder, "trainer.max_epochs=1", "budget_minutes=60", seeds="0"))
    assert same.returncode == 0 and "already finished" in same.stderr, same.stderr[-3000:]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def finished_record(path: Path, task: str, epochs: int, wall: float) -> None:
    write_json(path / "results.json", {"format": 1, "status": "finished", "metrics": {"test/elbo": -1.0},
                                       "epochs": epochs, "wall_time_s": wall, "config": {"task_name": task}})


def test_the_budget_predicts_a_run_from_the_runs_of_its_protocol(tmp_path):
    from omegaconf import OmegaConf

    from hsvae.sweeps.budget import expected_seconds

    finished_record(tmp_path / "a", "train", epochs=10, wall=100.0)  # 10 s an epoch
    write_json(tmp_path / "b" / "progress.json", {"epochs": 5, "elapsed_s": 60.0, "max_epochs": 20})  # 12 s
    (tmp_path / "b" / ".hydra").mkdir()
    (tmp_path / "b" / ".hydra" / "config.yaml").write_text("task_name: train\n")
    finished_record(tmp_path / "c", "mnist_table", epochs=10, wall=1e5)  # another protocol: not read
    fixed = OmegaConf.create({"task_name": "train", "trainer": {"max_epochs": 20},
                              "callbacks": {"early_stopping": None}})
    this = tmp_path / "this"
    assert expected_seconds(fixed, this, tmp_path)[0] == pytest.approx(20 * 11.0)
    stopping = OmegaConf.merge(fixed, {"callbacks": {"early_stopping": {"patience": 5}}})
    assert expected_seconds(stopping, this, tmp_path)[0] == pytest.approx(10 * 11.0)  # the finished run's epochs
    # a run that resumes has only its remaining epochs to go
    write_json(this / "progress.json", {"epochs": 4, "elapsed_s": 40.0, "max_epochs": 20})
    (this / "checkpoints").mkdir()
    (this / "checkpoints" / "last.ckpt").write_bytes(b"")
    seconds, how = expected_seconds(fixed, this, tmp_path)
    assert seconds == pytest.approx(16 * 11.0) and "less 4 done" in how
    # nothing measured of this protocol, or early stopping with no finished run: no prediction (the run starts)
    assert expected_seconds(OmegaConf.merge(fixed, {"task_name": "other"}), this, tmp_path) is None
    (tmp_path / "a" / "results.json").unlink()
    assert expected_seconds(stopping, this, tmp_path) is None


@pytest.mark.slow  # three sweeps as subprocesses
def test_a_run_that_cannot_fit_the_budget_is_not_started_and_is_reported(tmp_path):
    """An earlier run of the protocol in the sweep folder took an hour an epoch: with 30 minutes, the job records
    itself as skipped and the sweep says so (exit 0); make_tables lists it; the same command without the budget
    then runs it."""
    folder = tmp_path / "sweep"
    finished_record(folder / "earlier", "train", epochs=2, wall=7200.0)
    skipped = run(sweep(folder, "trainer.max_epochs=2", "budget_minutes=30", seeds="0"))
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    text = " ".join(skipped.stderr.split())
    assert "skipped by the time budget: expected 120 min (2 epochs (trainer.max_epochs) x 3600.0 s), 30 min of " \
           "the 30-minute budget left" in text
    assert "time budget: 1 run not started" in text and ": 0." in text
    record = results(folder / "0")
    assert record["status"] == "skipped" and not (folder / "0" / "checkpoints").exists()
    tables = run([sys.executable, "scripts/make_tables.py", str(folder), "--metrics", "test/elbo"])
    assert "skipped: time budget: expected 120 min" in tables.stdout, tables.stdout + tables.stderr
    again = run(sweep(folder, "trainer.max_epochs=2", seeds="0"))
    assert again.returncode == 0 and results(folder / "0")["status"] == "finished", again.stderr[-3000:]


def test_make_tables_prints_each_cell_beside_the_paper_with_its_gap_and_time(tmp_path):
    import yaml

    from hsvae.analysis.tables import main as make_tables

    for seed, (latent, ll, wall) in enumerate([("vmf", -93.0, 3000.0), ("vmf", -94.0, 3600.0),
                                               ("gaussian", -95.0, 7200.0)]):
        job = tmp_path / "runs" / f"latent={latent},seed={seed}"
        (job / ".hydra").mkdir(parents=True)
        # a campaign's operational overrides (launcher, budget, experiment) are not cells of the table
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
            ["experiment=mnist_table", f"latent={latent}", f"seed={seed}", f"budget_minutes={100 + seed}",
             *(["launcher=joblib"] if seed else [])]))
        write_json(job / "results.json", {"format": 1, "wall_time_s": wall, "config": {},
                                          "metrics": {"test/log_likelihood": ll}})
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump({"columns": ["LL"], "metrics": {"LL": "test/log_likelihood"}, "entries": [
        {"match": {"latent": "vmf"}, "values": {"LL": -93.16}},
        {"match": {"latent": "gaussian"}, "values": {"LL": -93.84}}]}))
    out = tmp_path / "table.md"
    assert make_tables([str(tmp_path / "runs"), "--paper", str(paper), "--wall-time", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "| latent | runs | test/log_likelihood | paper: LL | gap: LL | time/run | time | missing |"
    assert lines[2] == "| gaussian | 1 | -95.00 | -93.84 | -1.16 | 2.0 h | 2.0 h |  |"
    assert lines[3] == "| vmf | 2 | -93.50 ± 0.71 | -93.16 | -0.34 | 55 min | 1.8 h |  |"


def test_the_keys_left_out_of_a_runs_identity_are_one_list():
    """conf/hydra/default.yaml's exclude_keys (folder names, the continuation check) and make_tables' list."""
    import yaml

    from hsvae.analysis.results import OPERATIONAL_KEYS

    hydra_defaults = yaml.safe_load((ROOT / "conf" / "hydra" / "default.yaml").read_text())
    assert tuple(hydra_defaults["job"]["config"]["override_dirname"]["exclude_keys"]) == OPERATIONAL_KEYS


def test_a_campaign_sweeps_into_the_tables_runs_folder_one_folder_per_run(compose_train):
    from omegaconf import OmegaConf

    cfg = compose_train(["experiment=mnist_table", "sweep=campaign"])
    assert OmegaConf.select(cfg, "hydra.sweep.dir").endswith("/experiments/mnist_table/runs")
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.override_dirname}"
    assert cfg.callbacks.get("progress_bar") is None and cfg.auto_resume is True


def test_the_folder_plan_continues_the_same_run_and_refuses_another(tmp_path):
    """plan_folder, the rule every run applies to its folder before writing anything."""
    from hsvae.cli.continuation import plan_folder

    run_dir = tmp_path / "run"
    cfg = compose_config("train", ["latent=vmf", "seed=3"], run_dir)
    assert plan_folder(cfg, run_dir).checkpoint is None  # an empty folder: a new run
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text("- latent=vmf\n- seed=3\n- launcher=joblib\n")
    write_json(run_dir / "results.json", {"status": "interrupted", "metrics": {}})
    plan = plan_folder(cfg, run_dir)
    assert plan.checkpoint is None and plan.finished is None  # interrupted before a checkpoint: starts again
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert plan_folder(cfg, run_dir).checkpoint == str(run_dir / "checkpoints" / "last.ckpt")
    write_json(run_dir / "results.json", {"status": "finished", "metrics": {"test/elbo": -3.5}})
    assert plan_folder(cfg, run_dir).finished == {"test/elbo": -3.5}
    other = compose_config("train", ["latent=vmf", "seed=4"], run_dir)
    with pytest.raises(FileExistsError, match=r"already holds a run of other overrides \(seed: seed=3 there, "
                                              r"seed=4 here\).*allow_overwrite=true"):
        plan_folder(other, run_dir)
    assert plan_folder(compose_config("train", ["latent=vmf", "seed=4", "allow_overwrite=true"], run_dir),
                       run_dir).finished is None  # replaced
    with pytest.raises(FileExistsError, match="already holds a run"):
        plan_folder(compose_config("train", ["latent=vmf", "seed=3", "auto_resume=false"], run_dir), run_dir)
