"""The ``data`` marker (a pytest plugin, loaded by tests/conftest.py; it imports nothing heavy).

Every test that reads the real datasets (MNIST, Planetoid, ZINC250k under HSVAE_DATA_DIR) is marked ``data``:
those that request the ``data_dir`` fixture (directly or through another fixture) here, the others by hand.
Without the data, ``pytest -m "not data and not slow"`` runs the rest; a selection that holds ``data`` tests
stops before its first test, with one message and exit status 4, when HSVAE_DATA_DIR is unset or not a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The default tier without the datasets (a command-line -m replaces the -m "not slow" of pyproject's addopts).
WITHOUT_DATA = 'pytest -m "not data and not slow"'
#: Where a pytest-xdist worker leaves the message for the controller, which stops the session once.
_WORKER_KEY = "hsvae_data_missing"


def data_problem() -> str | None:
    """Why the real datasets cannot be read (None when HSVAE_DATA_DIR names a folder)."""
    value = os.environ.get("HSVAE_DATA_DIR")
    if not value:
        return "HSVAE_DATA_DIR is not set"
    if not Path(value).is_dir():
        return f"HSVAE_DATA_DIR={value} is not a folder"
    return None


def data_message(problem: str, count: int) -> str:
    return (f"{count} selected test(s) are marked 'data' and read the real datasets, but {problem}. "
            "Point HSVAE_DATA_DIR at the datasets folder (MNIST/, Planetoid/, zinc250k/; CI uses ../shared/data), "
            f"or run the tests without them: {WITHOUT_DATA}")


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]):
    # before the other implementations (the -m selection among them): mark the tests that read the datasets
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    result = yield
    # after them, on what is selected: stop at once, with one message, if it needs data that is not there
    problem = data_problem()
    count = sum(item.get_closest_marker("data") is not None for item in items)
    if problem and count and not config.option.collectonly:  # listing the tests reads no data
        message = data_message(problem, count)
        if hasattr(config, "workerinput"):  # a pytest-xdist worker: run nothing; the controller stops, once
            config.workeroutput[_WORKER_KEY] = message
            items[:] = []
        else:
            pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist's controller, as each worker ends: one that found the datasets missing stops the session."""
    message = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if message:
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets (HSVAE_DATA_DIR; CI points it at ../shared/data). Missing data fails, never skips.

    Requesting it marks the test ``data`` (above), so that a run without the data stops before it starts."""
    problem = data_problem()
    if problem:
        pytest.fail(data_message(problem, 1))
    return Path(os.environ["HSVAE_DATA_DIR"])
