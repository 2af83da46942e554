"""The ``data`` marker (tests/data_marker.py): without the datasets, a selection that needs them stops before its
first test, with one message and exit status 4; ``pytest -m "not data and not slow"`` runs the rest.

pytest runs in a subprocess, as a user types it: on the repository itself (pyproject's addopts, two xdist workers;
slow tier), and on a small folder of tests with the plugin alone (no torch to import).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.data_marker import WITHOUT_DATA

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "selected test(s) are marked 'data' and read the real datasets"

SMALL_SUITE = '''
import pytest

@pytest.fixture
def dataset(data_dir):
    return data_dir

def test_requests_data_dir(data_dir):
    assert data_dir.is_dir()

def test_reads_through_a_fixture(dataset):
    assert dataset.is_dir()

@pytest.mark.data
def test_marked_by_hand():  # e.g. a subprocess that finds the data through HSVAE_DATA_DIR
    assert os.environ["HSVAE_DATA_DIR"]

@pytest.mark.slow
def test_slow():
    pass

def test_needs_no_data():
    pass
'''


def run_pytest(cwd: Path, folder: str | None, *args: str) -> tuple[int, str]:
    """``python -m pytest ARGS`` in ``cwd``, with HSVAE_DATA_DIR=folder (unset if None)."""
    env = {k: v for k, v in os.environ.items() if k != "HSVAE_DATA_DIR" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])  # tests.data_marker
    if folder is not None:
        env["HSVAE_DATA_DIR"] = folder
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def small_suite(tmp_path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    data: reads the datasets\n    slow: long\n")
    (tmp_path / "test_small.py").write_text("import os\n" + textwrap.dedent(SMALL_SUITE))
    return tmp_path


def assert_stopped_with_one_message(code: int, out: str, count: int, problem: str) -> None:
    assert code == pytest.ExitCode.USAGE_ERROR, out
    assert out.count(MESSAGE) == 1, out
    assert f"{count} {MESSAGE}, but {problem}." in out and WITHOUT_DATA in out, out
    # no test ran, not even those that need no data: one message, not one error per test
    summary = out.split("\n! ")[0].strip().splitlines()[-1]  # pytest's last line before the message
    assert re.fullmatch(r"=+ (no tests ran|\d+ deselected) in [\d.]+s =+", summary), out


# ~15 CPU-seconds (three processes that import torch and Lightning): in the slow tier; the small-suite tests below
# check the same plugin, with and without xdist, in the default tier
@pytest.mark.slow
def test_the_default_command_on_the_repository_without_data():
    """`pytest <two ZINC tests and one other>` from the repository root, HSVAE_DATA_DIR unset: both workers find
    the data missing; the controller says so once."""
    selection = ["tests/test_smiles_data.py::test_vocabulary_and_lengths_come_from_the_data",  # through a fixture
                 "tests/test_smiles_data.py::test_missing_file_and_download",  # data_dir itself
                 "tests/test_smiles_data.py::test_tokenize_keeps_atoms_whole"]  # no data
    code, out = run_pytest(REPO, None, *selection)
    assert "2 workers" in out, out  # pyproject's -n 2 was in force
    assert_stopped_with_one_message(code, out, 2, "HSVAE_DATA_DIR is not set")


@pytest.mark.parametrize("folder, problem, workers", [
    (None, "HSVAE_DATA_DIR is not set", "0"),
    ("/nonexistent/data", "HSVAE_DATA_DIR=/nonexistent/data is not a folder", "2"),
], ids=["unset-one-process", "missing-folder-two-workers"])
def test_missing_data_stops_before_any_test(small_suite, folder, problem, workers):
    code, out = run_pytest(small_suite, folder, "-p", "tests.data_marker", "-n", workers, "-m", "not slow")
    assert_stopped_with_one_message(code, out, 3, problem)


def test_without_data_the_other_tests_run(small_suite):
    code, out = run_pytest(small_suite, None, "-p", "tests.data_marker", "-n", "0", "-m", "not data and not slow")
    assert code == pytest.ExitCode.OK, out
    assert "1 passed, 4 deselected" in out and MESSAGE not in out, out


def test_with_data_the_marked_tests_run(small_suite, tmp_path):
    code, out = run_pytest(small_suite, str(tmp_path), "-p", "tests.data_marker", "-n", "0", "-m", "data", "-v")
    assert code == pytest.ExitCode.OK, out
    assert "3 passed, 2 deselected" in out, out
    for name in ("test_requests_data_dir", "test_reads_through_a_fixture", "test_marked_by_hand"):
        assert f"test_small.py::{name} PASSED" in out, out


def test_listing_the_tests_needs_no_data(small_suite):
    code, out = run_pytest(small_suite, None, "-p", "tests.data_marker", "-n", "0", "--collect-only", "-q",
                           "-m", "data")
    assert code == pytest.ExitCode.OK, out
    assert "3/5 tests collected (2 deselected)" in out and MESSAGE not in out, out
