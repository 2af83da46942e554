"""What a run prints is ours: the libraries' advertisements and deprecation notices go to the run's log file only.

Called where a run starts, after Hydra configured logging (a console handler and the run's log file on the root
logger). Python warnings are logged (``py.warnings``), so they reach the log file too; the console drops the lines
that tell a user nothing about their run.
"""

from __future__ import annotations

import logging
import re

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
