"""How a command ends when something goes wrong: one line a user can act on, the traceback on disk.

Every entry point (``train.py``, ``eval.py``) runs under :func:`run_entry_point`. An *expected* error (a bad
config value, a missing or corrupt data file, a checkpoint that does not fit, a NaN loss) prints one line naming
the key or file and the fix, without a traceback, and exits 2 for usage and configuration errors, 1 for runtime
failures. Anything else is a bug: one line saying so, exit 1. The traceback goes to the run's log file (and
to the terminal with ``HYDRA_FULL_ERROR=1``), and a run that owned its output directory leaves a
``results.json`` with ``"status": "failed"`` and the reason (see :func:`record_failure`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hsvae.analysis.results import read_status, unfinished_reason
from hsvae.cli.records import write_record
from hsvae.cli.signals import SWEEP_PHASE, as_interruption, received, running_sweep_dir
from hsvae.cli.signals import install as install_signal_handlers
from hsvae.utils.errors import (BudgetError, CheckpointError, ConfigError, DatasetNotFoundError, EmptySweepError,
                                EvaluationError, MalformedDatasetError, MissingMetricError, NonFiniteLossError, SearchSpaceError)

#: exit codes
USAGE_ERROR = 2
RUNTIME_ERROR = 1


#: usage and configuration errors besides Hydra's and OmegaConf's own (and Lightning's refusal of trainer settings:
#: classify() imports it only when it gets that far)
_USAGE_TYPES = (ConfigError, EvaluationError, BudgetError, FileExistsError, EmptySweepError, SearchSpaceError,
                MissingMetricError)
#: runtime failures
_RUNTIME_TYPES = (DatasetNotFoundError, MalformedDatasetError, NonFiniteLossError, CheckpointError, FileNotFoundError)


def _unwrap(err: BaseException) -> BaseException:
    """The error a user can act on: Hydra wraps an exception raised while instantiating a ``_target_`` (a data
    module's or model's argument check) in an ``InstantiationException``."""
    from hydra.errors import InstantiationException

    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def classify(err: BaseException) -> tuple[int, str]:
    """``(exit code, one-line message)`` for an exception; the message starts with ``error:``."""
    from hydra.errors import HydraException, InstantiationException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    inner = _unwrap(err)
    if isinstance(inner, KeyboardInterrupt):
        signal_ = as_interruption(inner)
        return signal_.exit_code, (f"error: interrupted by {signal_.name} ({_SIGNAL_WORDS.get(signal_.name, 'a signal')}) "
                                   f"while {signal_.phase}")
    if isinstance(inner, OSError) and inner.errno in ENVIRONMENT_FAULTS:
        cause, fix = ENVIRONMENT_FAULTS[inner.errno]
        where = inner.filename if inner.filename is not None else "(no path given)"
        return RUNTIME_ERROR, f"error: {cause}: {where}; {fix}"
    text = " ".join(str(inner).split()) or type(inner).__name__
    # Hydra's unknown group option lists the choices, then its search path: the choices are what a user needs
    text = text.split(" Config search path:")[0]
    if isinstance(inner, OverrideParseException):
        return USAGE_ERROR, f"error: {text}. {QUOTING_HINT}"
    if isinstance(inner, _RUNTIME_TYPES):
        return RUNTIME_ERROR, f"error: {text}"
    # the config's own errors (an unknown option or key) are classified without importing the run's libraries, so
    # that a typo is one line at once; a constructor's argument check (unwrapped from Hydra's error) names the
    # config key (dataset.batch_size, ...)
    argument_check = isinstance(inner, (ValueError, TypeError)) and isinstance(err, InstantiationException)
    if isinstance(inner, (HydraException, OmegaConfBaseException)) or argument_check:
        return USAGE_ERROR, f"error: {text}"
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    # MisconfigurationException: Lightning's refusal of trainer settings (trainer=gpu without a GPU, ...)
    if isinstance(inner, (*_USAGE_TYPES, MisconfigurationException)):
        return USAGE_ERROR, f"error: {text}"
    return RUNTIME_ERROR, (f"error: unexpected {type(inner).__name__}: {text} -- probably a bug in hsvae; "
                           "the traceback is in the run's log file (HYDRA_FULL_ERROR=1 prints it)")


_ELSEWHERE = "write elsewhere (hydra.run.dir=..., hydra.sweep.dir=..., paths.log_dir=..., paths.cache_dir=...)"
#: faults of the machine, not of hsvae: errno -> (the cause, the fix), for one line naming the path
ENVIRONMENT_FAULTS = {
    errno.ENOSPC: ("no space left on the device", f"free some space there, or {_ELSEWHERE}"),
    errno.EDQUOT: ("disk quota exceeded", f"free some of your quota, or {_ELSEWHERE}"),
    errno.EROFS: ("read-only file system", _ELSEWHERE),
    errno.EACCES: ("permission denied", f"make it writable (or readable) for you, or {_ELSEWHERE}"),
    errno.EPERM: ("operation not permitted", f"make it writable for you, or {_ELSEWHERE}"),
    errno.ENOTDIR: ("a part of this path is a file, not a folder", "choose a path whose parents are folders"),
    errno.EISDIR: ("a folder where a file was expected", "choose a file's path, or remove that folder"),
    errno.ENOENT: ("no such file or folder (it vanished, or was never there)",
                   "check the path, and that nothing else removes files there while the run is going"),
    errno.ENAMETOOLONG: ("a file name too long for the file system", "choose a shorter path"),
    errno.EIO: ("an input/output error of the device", "check the disk (dmesg), or write elsewhere"),
}

#: Hydra reads an override's value with its own grammar: spaces, non-ASCII letters and most punctuation need quotes
#: that reach Hydra, inside the shell's
QUOTING_HINT = ("A value with spaces, non-ASCII letters or special characters needs Hydra's quotes inside the "
                "shell's: \"hydra.run.dir='/runs/run é 1'\" or 'ckpt_path=\"/runs/run é 1/checkpoints/last.ckpt\"'")

#: how a user knows each handled signal
_SIGNAL_WORDS = {"SIGINT": "Ctrl-C", "SIGTERM": "a kill, or a scheduler's preemption or time limit",
                 "SIGHUP": "the terminal closed", "SIGUSR1": "a batch system's warning",
                 "SIGUSR2": "a batch system's warning"}


def resume_hint(output_dir: Path) -> str:
    """How to continue an interrupted run in ``output_dir``."""
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"resume with ckpt_path={last} (or the same command with hydra.run.dir={output_dir})"
    return f"nothing was trained yet: the same command with hydra.run.dir={output_dir} starts it again"


def run_script(main: Callable[[], Any]) -> None:
    """Run a script's ``main()`` (the benchmarks, the plotting tools) with the entry points' contract: an expected
    error (a missing dataset or folder, a fault of the machine, a bad checkpoint) is one line and exit 1 (2 for a
    usage error); only an unexpected error shows its traceback."""
    try:
        result = main()
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 -- classified below
        code, message = classify(err)
        if "probably a bug" in message:
            raise
        print(message, file=sys.stderr)
        raise SystemExit(code) from None
    raise SystemExit(result if isinstance(result, int) else 0)


def record_failure(output_dir: str | Path, log_name: str, err: BaseException, cfg: Any = None,
                   status: str = "failed", cause: BaseException | None = None) -> None:
    """Append the error and its traceback to ``<output_dir>/<log_name>`` and write ``results.json`` with the
    status and the reason (that of ``cause``, when given: the signal behind ``err``). Only for a run that owns
    ``output_dir`` (never another run's directory)."""
    output_dir = Path(output_dir)
    cause = err if cause is None else cause
    code, message = classify(cause)
    extra = {}
    if isinstance(_unwrap(cause), KeyboardInterrupt):
        signal_ = as_interruption(_unwrap(cause))
        extra = {"signal": signal_.name, "phase": signal_.phase}
        message = f"{message}; {resume_hint(output_dir)}"
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / log_name, "a") as log:
        log.write(f"{message}\n")
        log.write("".join(traceback.format_exception(err)))
    write_record(output_dir, cfg, status, {}, reason=message.removeprefix("error: "), exit_code=code, **extra)
    for raised in {id(err): err, id(cause): cause}.values():  # (the cause is what goes on being raised)
        raised.hsvae_recorded = str(output_dir)  # type: ignore[attr-defined]  (pickled with the exception)
        raised.hsvae_outcome = (code, message)  # type: ignore[attr-defined]  (what the command then prints)


@contextlib.contextmanager
def recording_failures(output_dir: str | Path, log_name: str, cfg: Any = None) -> Iterator[None]:
    """Around the work of a run that owns ``output_dir``: an error is recorded there (:func:`record_failure`;
    Ctrl-C as ``interrupted``) and raised on."""
    try:
        yield
    except KeyboardInterrupt as err:
        record_failure(output_dir, log_name, err, cfg, status="interrupted")
        raise
    except Exception as err:
        interruption = received()
        if interruption is not None:
            # an error raised as a signal unwinds the run (torch.save cut short mid-write raises a RuntimeError) is
            # the signal's: recorded as the interruption (the error's traceback in the log) and raised as it
            record_failure(output_dir, log_name, err, cfg, status="interrupted", cause=interruption)
            raise interruption from err
        record_failure(output_dir, log_name, err, cfg)
        raise


class _JobFailed(BaseException):
    """Carries a single run's exception past Hydra's job runner, which would print "Error executing job with
    overrides: ..." before it (it catches ``Exception`` only). Multirun jobs raise their errors as they are: the
    sweeper records each failed job and goes on (an Optuna search counts it as a failed trial)."""

    def __init__(self, error: BaseException):
        super().__init__(error)
        self.error = error


def single_run_errors(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Decorate a Hydra task function (under ``@hydra.main``) so that a single run's error reaches
    :func:`run_entry_point` without Hydra's extra lines."""

    @functools.wraps(task)
    def wrapped(cfg: Any) -> Any:
        try:
            return task(cfg)
        except (Exception, KeyboardInterrupt) as err:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if not HydraConfig.initialized():
                raise
            if getattr(err, "hsvae_recorded", None) is None:
                runtime = HydraConfig.get().runtime
                _remove_unclaimed_folder(Path(runtime.output_dir), Path(runtime.cwd))
            if HydraConfig.get().mode == RunMode.RUN and isinstance(err, Exception):
                raise _JobFailed(err) from err
            raise

    return wrapped


def _remove_unclaimed_folder(output_dir: Path, launched_in: Path) -> None:
    """A command refused before it claimed its output folder leaves none behind: Hydra made the folder (and the
    job's log file in it, and its parents such as logs/eval/runs/) before the checks ran. Only a folder that holds
    nothing else is removed, then its parents below the launch folder while they are empty."""
    try:
        entries = list(output_dir.iterdir())
    except OSError:
        return
    if not all(entry.is_file() and entry.suffix == ".log" for entry in entries):
        return
    with contextlib.suppress(OSError):
        for entry in entries:
            entry.unlink()
        folder = output_dir.resolve()
        top = launched_in.resolve()
        while folder != top and top in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def run_entry_point(hydra_main: Callable[[], Any], prepare: Callable[[], None] | None = None) -> Any:
    """Run a ``@hydra.main`` function (after ``prepare``, e.g. rewriting the command line); turn its exceptions
    into one line on stderr and an exit code. Signals end it as interruptions from here on (hsvae/cli/signals.py).

    Hydra's own handler prints a traceback and exits 1; with ``HYDRA_FULL_ERROR=1`` it re-raises instead, which
    lets this function choose the message and the exit code. A user who set ``HYDRA_FULL_ERROR=1`` (or passed
    ``--verbose``) gets the traceback as well.
    """
    verbose = os.environ.get("HYDRA_FULL_ERROR") == "1" or "--verbose" in sys.argv
    multirun = any(arg in ("-m", "--multirun") for arg in sys.argv[1:])
    if "--verbose" in sys.argv:
        sys.argv.remove("--verbose")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        install_signal_handlers()
        if prepare is not None:
            prepare()
        return hydra_main()
    except (Exception, KeyboardInterrupt, _JobFailed) as caught:  # noqa: BLE001 -- every error ends here
        err = caught.error if isinstance(caught, _JobFailed) else caught
        # a multirun's launching process that forwarded a signal to its jobs ends with that signal, whatever the
        # jobs' interruption came back as
        err = received() or err
        code, message = getattr(err, "hsvae_outcome", None) or classify(err)
        if verbose:
            traceback.print_exception(err)
        recorded = getattr(err, "hsvae_recorded", None)
        where = f" (details: {recorded})" if recorded else ""
        print(f"{message}{where}", file=sys.stderr)
        if recorded and multirun:
            print(sweep_summary(Path(recorded).parent), file=sys.stderr)
        elif multirun and getattr(err, "phase", None) == SWEEP_PHASE and running_sweep_dir() is not None:
            print(sweep_summary(running_sweep_dir()), file=sys.stderr)
        raise SystemExit(code) from None


def sweep_summary(sweep_dir: Path) -> str:
    """One line: how many jobs of a sweep finished and which did not (from each job's results.json)."""

    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name)
    bad = [p.name for p in jobs if (status := read_status(p)) is None or unfinished_reason(status)]
    return (f"sweep {sweep_dir}: {len(jobs) - len(bad)} of {len(jobs)} jobs finished; not finished: "
            f"{', '.join(bad) or 'none'} (each job's results.json says why; make_tables lists them)")
