"""The commands' entry points (``train.py``, ``eval.py``, ``hsvae-train``, ``hsvae-eval``), light on purpose.

Hydra composes and checks the config first (a few tenths of a second: an unknown option or key is one line at
once); the libraries a run needs (torch, Lightning, the data: seconds) are imported after that, once, where the
run starts. Nothing above this module's task functions imports them.

What a run prints is ours: the libraries' advertisements and deprecation notices go to the run's log file only
(:func:`quiet_console`, called where a run starts, after Hydra configured logging: a console handler and the run's
log file on the root logger). Python warnings are logged (``py.warnings``), so they reach the log file too; the
console drops the lines that tell a user nothing about their run.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import hydra
from omegaconf import DictConfig

from hsvae.cli import CONFIG_DIR
from hsvae.cli.failures import run_entry_point, single_run_errors
from hsvae.cli.plugins import exit_if_plugin_missing
from hsvae.cli.resume import resume_arguments
from hsvae.cli.signals import install as install_signal_handlers
from hsvae.cli.signals import set_phase
from hsvae.sweeps import callbacks as hydra_callbacks


#: messages shown in the log file, never on the console
NOISE = re.compile("|".join([
    r"litlogger", r"litmodels",                              # Lightning's cloud advertisements ("Tip: ...")
    r"LeafSpec",                                             # a deprecation inside Lightning's _pytree helper
    r"callbacks used to create the checkpoint need to be provided",  # eval.py's ckpt_path: it needs none
    r"^(GPU|TPU|HPU) available:",                            # the banner already names the device
    r"`torch\.distributed\.reduce_op` is deprecated",
    r"The dirpath has changed from",                          # eval.py tests a checkpoint; it writes none
]))


#: libraries whose INFO lines (restoring a checkpoint, the trainer's devices, why a fit stopped) are for the log file
CHATTY = ("pytorch_lightning", "lightning", "lightning_fabric", "torch")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING and record.name.split(".")[0] in CHATTY:
            return False
        return not NOISE.search(record.getMessage())


def quiet_console() -> None:
    """Route warnings to logging, and keep :data:`NOISE` off the console handlers of the root logger."""
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not any(isinstance(f, _DropNoise) for f in handler.filters):
                handler.addFilter(_DropNoise())


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@single_run_errors
def _train_job(cfg: DictConfig) -> Any:
    install_signal_handlers()  # again in a launcher's worker process (joblib), where train_main() did not run
    quiet_console()
    set_phase("checking the output folder")
    from hsvae.cli.train import run_job  # torch and Lightning: once the config is composed

    return run_job(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@single_run_errors
def _eval_job(cfg: DictConfig) -> Any:
    install_signal_handlers()
    quiet_console()
    set_phase("setting up the evaluation")
    from hsvae.cli.evaluate import evaluate  # torch and Lightning: once the config is composed

    return evaluate(cfg)


def _prepare_train() -> None:
    exit_if_plugin_missing()
    sys.argv[1:] = resume_arguments(sys.argv[1:])


def train_main() -> Any:
    """``python train.py [overrides]``"""
    result = run_entry_point(_train_job, prepare=_prepare_train)
    if hydra_callbacks.sweep_problem:
        print(f"error: {hydra_callbacks.sweep_problem}", file=sys.stderr)
        raise SystemExit(2)
    return result


def eval_main() -> None:
    """``python eval.py ckpt_path=<run>/checkpoints/best.ckpt [overrides]``"""
    run_entry_point(_eval_job)


# Lightning advertises a cloud logger on every run: a filter on its own logger, for the lines it prints before a
# run's console is set up (quiet_console() takes the rest)
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
