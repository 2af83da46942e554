"""Signals as interruptions: a run stopped by a signal at any moment ends with a record and a folder to resume.

SIGINT (Ctrl-C), SIGTERM (what SLURM and most schedulers send at preemption and at the time limit), SIGHUP (a
closed terminal) and SIGUSR1/SIGUSR2 (the signals batch systems send ahead of a kill) raise :class:`Interrupted`
in the main thread, wherever it is: composing the config, loading the data, training, validating, testing,
writing the results. It is a ``KeyboardInterrupt``, so Lightning shuts a fit down as it does for Ctrl-C; the run's
record (``results.json``: ``status: interrupted``, the signal, the phase) is written on the way out, and the
command exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process a
signal ended. A second signal while the first one is being handled is ignored: the record is written whole.

A signal whose handler another library installed first is left to it: under ``launcher=slurm`` submitit's
handlers checkpoint and requeue a preempted job, which then continues its folder (``auto_resume``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytorch_lightning as pl

#: the signals that end a run with a record (those the platform has)
HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A signal ended the run: ``signum``, its ``name`` (``SIGTERM``) and the ``phase`` it arrived in."""

    def __init__(self, signum: int, phase: str = "starting"):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.phase = phase
        super().__init__(f"{self.name} while {phase}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_phase = "composing the config"
_received: Interrupted | None = None


def set_phase(phase: str) -> None:
    """What the run is doing now (named in the record of a signal that arrives)."""
    global _phase
    _phase = phase
    _inject_fault(phase)


def _inject_fault(phase: str) -> None:
    """Fault injection for the test suite (tests/test_faults.py): with ``HSVAE_FAULT_SIGNAL=SIGTERM@testing`` the
    process sends itself SIGTERM as it enters the first phase whose name starts with ``testing``: a real signal at
    a deterministic point."""
    spec = os.environ.get("HSVAE_FAULT_SIGNAL")
    if spec:
        name, _, at = spec.partition("@")
        if phase.startswith(at):
            del os.environ["HSVAE_FAULT_SIGNAL"]  # once
            os.kill(os.getpid(), getattr(signal, name))


def received() -> Interrupted | None:
    """The signal that interrupted this process, if one did."""
    return _received


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is not None:
        return  # the first signal is being handled: its record is being written
    _received = Interrupted(signum, _phase)
    raise _received


def install() -> None:
    """Handle :data:`HANDLED` in this process (the main thread only; a handler another library set is kept).
    Idempotent: the entry point and each multirun job (a joblib worker is a process of its own) call it."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        current = signal.getsignal(signum)
        ours = current is _handle or (signum == signal.SIGINT and current is signal.default_int_handler)
        if ours or current in (signal.SIG_DFL, None):
            signal.signal(signum, _handle)
    _inject_fault(_phase)


def as_interruption(err: BaseException) -> Interrupted:
    """The :class:`Interrupted` behind a ``KeyboardInterrupt`` (a plain one is Ctrl-C's)."""
    if isinstance(err, Interrupted):
        return err
    return _received or Interrupted(signal.SIGINT, _phase)


@contextlib.contextmanager
def lightning_interruptions(trainer: pl.Trainer) -> Iterator[None]:
    """Around ``trainer.fit`` / ``trainer.test``: Lightning turns a ``KeyboardInterrupt`` (so any
    :class:`Interrupted`) into a graceful stop and ``sys.exit(1)``; this raises the interruption again, so that the
    run records it and exits with the signal's code."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise as_interruption(KeyboardInterrupt()) from None
        raise


class PhaseTracker(pl.Callback):
    """Names the phase of a fit or test as Lightning goes through it (for a signal's record)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("starting the fit")

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("checking the validation step")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase(f"training (epoch {trainer.current_epoch})")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            set_phase(f"validating (epoch {trainer.current_epoch})")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        set_phase("testing")
