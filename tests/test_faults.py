"""Faults at any moment: real signals delivered in each phase of a run (issue 23).

Each case runs ``python train.py`` as a user does, in a subprocess that sends itself the signal as it enters the
phase (``HSVAE_FAULT_SIGNAL=<signal>@<phase>``, hsvae/cli/signals.py): a real signal, at a deterministic point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["latent=vmf", "trainer.max_epochs=2", "dataset.n_train=320", "model.eval_samples=5",
         "callbacks.progress_bar=null", "callbacks.early_stopping=null"]
#: phase (as the run names it) -> (a record is written, a checkpoint exists)
PHASES = {
    "composing the config": (False, False),
    "checking the output folder": (False, False),  # not this run's folder yet: nothing written there
    "setting up the run": (True, False),
    "loading the data": (True, False),
    "training (epoch 1)": (True, True),
    "validating (epoch 1)": (True, True),
    "testing": (True, True),
    "writing the results": (True, True),
}


def train(run_dir: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HSVAE_FAULT_SIGNAL", None)
    if fault:
        env["HSVAE_FAULT_SIGNAL"] = fault
    return subprocess.run([sys.executable, "train.py", *SMALL, f"hydra.run.dir={run_dir}", *extra], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def check_interrupted(proc: subprocess.CompletedProcess, run_dir: Path, name: str, phase: str) -> None:
    recorded, trained = PHASES[phase]
    assert proc.returncode == 128 + getattr(signal, name), proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"interrupted by {name}" in lines[0] and f"while {phase}" in lines[0], lines[0]
    if recorded:
        record = results(run_dir)
        assert (record["status"], record["signal"], record["phase"]) == ("interrupted", name, phase)
        assert record["exit_code"] == 128 + getattr(signal, name)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() == trained


def check_continued(run_dir: Path, reference: dict) -> None:
    """The same command again finishes the run: the uninterrupted run's numbers."""
    again = train(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert results(run_dir)["status"] == "finished"
    assert results(run_dir)["metrics"] == reference["metrics"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = train(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results(run_dir)


def test_sigterm_in_the_test_stage_is_recorded_and_the_same_command_finishes_the_run(tmp_path, reference):
    """What SLURM sends at a time limit, while the run tests: exit 143 with a record, not 0 without one."""
    run_dir = tmp_path / "run"
    check_interrupted(train(run_dir, "SIGTERM@testing"), run_dir, "SIGTERM", "testing")
    check_continued(run_dir, reference)


@pytest.mark.slow  # 21 subprocess runs and their continuations
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_in_any_phase_ends_with_a_record_and_the_same_command_continues(tmp_path, reference, name,
                                                                                  phase):
    run_dir = tmp_path / "run"
    check_interrupted(train(run_dir, f"{name}@{phase}"), run_dir, name, phase)
    check_continued(run_dir, reference)
