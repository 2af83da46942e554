"""What a resumed run needs beyond Lightning's own checkpoint state: every random state, and the time spent.

Lightning restores the model, the optimiser, the loops and the callbacks, but not the random generators: a run
resumed from ``last.ckpt`` would draw its sampler noise and its dynamic binarisation from a generator seeded
afresh, statistically the same run but not the same digits. :class:`RunState` writes torch's CPU and CUDA
generators, numpy's and Python's into every checkpoint, and sets them back when the resumed fit starts its first
training epoch: the resumed run is the uninterrupted run digit for digit.

Why then: a checkpoint is written at the end of an epoch's validation; until the next epoch's first step nothing
draws from the generators, while a resumed fit first runs Lightning's sanity check (which does draw). Setting the
states at the first ``on_train_epoch_start`` puts the resumed fit where the uninterrupted one was.

It also carries the run's wall time across attempts (``elapsed_s``: the time of the work the checkpoint holds)
and writes a progress file after every epoch (epochs done, elapsed seconds, the epoch limit): what a sweep's time
budget reads to predict how long a run of this protocol takes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from hsvae.utils.io import write_json_atomic


def random_states() -> dict[str, Any]:
    """Every generator a run draws from: torch's (CPU and each initialised CUDA device), numpy's and Python's, as
    tensors and plain values (what ``torch.load(weights_only=True)``, Lightning's default, reads back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }


def set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])


class RunState(pl.Callback):
    """Random states and elapsed time in every checkpoint, restored on resume; a progress file per epoch.

    Args:
        progress_file: where to write the progress after every epoch (JSON); None writes none.
        started: when this attempt started (``time.time()``); defaults to the callback's creation.
    """

    def __init__(self, progress_file: str | Path | None = None, started: float | None = None):
        self.progress_file = Path(progress_file) if progress_file is not None else None
        self.started = time.time() if started is None else started
        # from a checkpoint: the time earlier attempts spent on the work it holds, and the states to set back
        self.earlier_s = 0.0
        self.attempts = 1
        self._loaded: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._pending_states: dict[str, Any] | None = None

    @property
    def elapsed_s(self) -> float:
        """Seconds of work in this run so far: earlier attempts' (up to their checkpoint) and this one's."""
        return self.earlier_s + time.time() - self.started

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # fit_ended: the fit stops after this epoch (early stopping decided it). Lightning does not keep it, and a run
        # interrupted in its test stage would otherwise train one more epoch when it resumes.
        return {"random": random_states(), "elapsed_s": self.elapsed_s, "attempts": self.attempts,
                "fit_ended": bool(self._trainer is not None and self._trainer.should_stop)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks for the test stage too (from best.ckpt): only a fit that resumes takes them
        self._loaded = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._loaded is not None:
            self._pending_states = self._loaded.get("random")
            self.earlier_s = float(self._loaded.get("elapsed_s", 0.0))
            self.attempts = int(self._loaded.get("attempts", 1)) + 1
            if self._loaded.get("fit_ended"):
                trainer.should_stop = True  # the fit had ended: on to the test stage, as the uninterrupted run
            self._loaded = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending_states is not None:
            set_random_states(self._pending_states)
            self._pending_states = None

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress_file is None or trainer.sanity_checking:
            return
        write_json_atomic(self.progress_file, {
            "epochs": trainer.current_epoch + 1,
            "elapsed_s": round(self.elapsed_s, 3),
            "max_epochs": trainer.max_epochs,
        })
