"""Signals as interruptions (light: the entry points install these before Hydra composes the config): a run stopped by a signal at any moment ends with a record and a folder to resume.

SIGINT (Ctrl-C), SIGTERM (what SLURM and most schedulers send at preemption and at the time limit), SIGHUP (a
closed terminal) and SIGUSR1/SIGUSR2 (the signals batch systems send ahead of a kill) raise :class:`Interrupted`
in the main thread, wherever it is: composing the config, loading the data, training, validating, testing,
writing the results. It is a ``KeyboardInterrupt``, so Lightning shuts a fit down as it does for Ctrl-C; the run's
record (``results.json``: ``status: interrupted``, the signal, the phase) is written on the way out, and the
command exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process a
signal ended. A second signal while the first one is being handled is ignored: the record is written whole.

A multirun whose launcher runs its jobs in other processes (``launcher=joblib``) has a launching process that only
waits: a signal sent to it alone (``kill <pid>``, a scheduler that signals the main process) is forwarded to the jobs
running in its sweep folder, each of which records its interruption as above; once they all have, the sweep ends
with the signal's exit code. A second signal stops the wait.

A signal the process was started ignoring stays ignored (``nohup``'s SIGHUP; SIGINT in a shell's background job),
as does a signal whose handler another library installed first: under ``launcher=slurm`` submitit's
handlers checkpoint and requeue a preempted job, which then continues its folder (``auto_resume``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hsvae.analysis.results import LOCK_FILE, read_json

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

    def __reduce__(self):  # a launcher's worker sends it back to the launching process
        return type(self), (self.signum, self.phase)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: how long a multirun's launching process waits for its jobs to record a signal it forwarded to them
FORWARD_WAIT_S = 300.0
#: how long no job of the sweep may hold its folder before the launcher stops waiting
_SETTLE_S = 1.0

#: the phase of a multirun's launching process while its jobs run (see :class:`SweepSignals`)
SWEEP_PHASE = "running the sweep's jobs"

_phase = "composing the config"
_received: Interrupted | None = None
_sweep_dir: Path | None = None
_waiting_for_jobs = False


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


def running_sweep_dir() -> Path | None:
    """The sweep folder whose jobs this (launching) process runs, if it is one."""
    return _sweep_dir


def _running_jobs() -> list[psutil.Process]:
    """The processes, among this one's descendants, that hold a run folder's lock in the sweep folder."""
    if _sweep_dir is None:
        return []
    try:
        descendants = {child.pid: child for child in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return []
    jobs = []
    for lock in _sweep_dir.rglob(LOCK_FILE):
        pid = (read_json(lock) or {}).get("pid")
        if pid in descendants:
            jobs.append(descendants[pid])
    return jobs


def _forward_and_wait(signum: int) -> None:
    """Send ``signum`` to the sweep's running jobs and wait until each has written its record (released its folder's
    lock). The launcher must not go on before: joblib, handed the first job's interruption, kills the workers that
    still run, which would cut the others' records short. A job a freed worker starts meanwhile (joblib queues one
    call ahead) is signalled too once it holds its folder; a job that holds none after a short settle is left to the
    launcher. Bounded by :data:`FORWARD_WAIT_S`; a second signal stops the wait (see :func:`_handle`)."""
    signalled: set[int] = set()
    deadline = time.monotonic() + FORWARD_WAIT_S
    quiet_since = None
    while time.monotonic() < deadline:
        jobs = _running_jobs()
        for job in jobs:
            if job.pid not in signalled:
                signalled.add(job.pid)
                with contextlib.suppress(psutil.Error):
                    job.send_signal(signum)
        if jobs:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > _SETTLE_S:
            return
        time.sleep(0.1)


def received() -> Interrupted | None:
    """The signal that interrupted this process, if one did."""
    return _received


def _handle(signum: int, frame: FrameType | None) -> None:
    global _received, _waiting_for_jobs
    if _received is not None:
        if _waiting_for_jobs:  # a second signal while the jobs record theirs: stop waiting for them
            _waiting_for_jobs = False
            raise _received
        return  # the first signal is being handled: its record is being written
    _received = Interrupted(signum, _phase)
    if _phase == SWEEP_PHASE and _running_jobs():
        # the jobs record their interruption; the sweep then ends with this one
        _waiting_for_jobs = True
        try:
            _forward_and_wait(signum)
        finally:
            _waiting_for_jobs = False
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
def lightning_interruptions(trainer: Any) -> Iterator[None]:
    """Around ``trainer.fit`` / ``trainer.test``: Lightning turns a ``KeyboardInterrupt`` (so any
    :class:`Interrupted`) into a graceful stop and ``sys.exit(1)``; this raises the interruption again, so that the
    run records it and exits with the signal's code."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise as_interruption(KeyboardInterrupt()) from None
        raise


class SweepSignals(Callback):
    """Hydra callback (conf/hydra/default.yaml): the launching process of a multirun names its phase while the jobs
    run, so that a signal sent to it alone is forwarded to the jobs that run in processes of their own."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        # as its jobs start: a signal from now on is forwarded to the jobs that run in the sweep folder in processes
        # of their own (each one holds its folder's lock)
        global _sweep_dir
        _sweep_dir = Path(config.hydra.sweep.dir)
        set_phase(SWEEP_PHASE)

    def on_job_end(self, config: DictConfig, job_return: object, **kwargs: object) -> None:
        # the basic launcher runs the jobs in this process: between two of them, the sweep is the phase again
        if _sweep_dir is not None:
            set_phase(SWEEP_PHASE)
