"""Shared fixtures: composing the real Hydra config, and locating the real datasets (``data_dir``, with the
``data`` marker, in tests/data_marker.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hsvae.cli import CONFIG_DIR

# the data_dir fixture, and the data marker on every test that requests it
pytest_plugins = ("tests.data_marker",)

# Distributions validate their arguments in tests (training turns validation off for speed).
torch.distributions.Distribution.set_default_validate_args(True)
# The suite runs on two pytest-xdist workers (pyproject's addopts): one thread each, and the same for the
# training subprocesses some tests start, so that two workers never oversubscribe two cores.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, root_dir: Path | None = None
) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, as ``train.py`` would, writing into ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(root_dir or output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def no_argument_validation():
    """As train.py runs (validate_distributions=false): torch.distributions' argument checks read values (a host
    read, and slow)."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    yield
    torch.distributions.Distribution.set_default_validate_args(previous)


@pytest.fixture
def compose_train(tmp_path):
    """``compose_train(overrides, name="run")`` -> a train config writing into ``tmp_path/name``."""

    def _compose(overrides: list[str], name: str = "run") -> DictConfig:
        return compose_config("train", overrides, tmp_path / name)

    yield _compose
    GlobalHydra.instance().clear()


#: Overrides that keep a test run small and quiet.
FAST = [
    "callbacks.progress_bar=null",
    "+trainer.enable_model_summary=false",
    "+trainer.enable_progress_bar=false",
]


def pytest_xdist_make_scheduler(config, log):
    """``-n 2`` (pyproject's addopts) schedules as ``--dist load`` does, except that the README-command tests of one
    Markdown block go to one worker, in order: they run one after another in one working directory, each reading
    what the earlier ones wrote (tests/test_readme_commands.py)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    try:
        from tests.test_readme_commands import xdist_scope
    except Exception:  # noqa: BLE001 - the module's own tests report it; schedule as --dist load
        return None

    class ReadmeBlockScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid) or nodeid

    return ReadmeBlockScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """The suite's commands start as from a terminal. A test runner started with ``nohup`` or as a shell's
    background job ignores SIGHUP or SIGINT, and every process it starts inherits that (a signal ignored at exec
    stays ignored; a handled one is reset to its default): then the tests that deliver Ctrl-C or a hang-up to a
    run would see it ignored, as hsvae rightly leaves a signal its caller chose to ignore."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
