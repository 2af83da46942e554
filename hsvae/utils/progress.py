"""Progress, with an ETA, of long phases that Lightning's own bars do not cover (the importance-sampled
log-likelihood, SMILES decoding, reading many runs).

    with PhaseProgress("test: decoding 1000 prior samples", total=1000, trainer=self.trainer) as bar:
        for ...:
            bar.advance(500)          # or bar.update(completed=...)

Shown only on a terminal (stderr is a TTY) and, inside a Lightning run, only when the run shows a progress bar
(``trainer.progress_bar_callback`` enabled: never with ``+trainer.enable_progress_bar=false``, nor on ranks
other than zero); otherwise every call is a no-op. Where it goes:

* inside a run whose bar is Lightning's ``RichProgressBar`` (the default ``callbacks.progress_bar``): one more
  task in that bar's live display, removed when the phase ends (a second live display would garble the first);
* inside a run with another bar (Lightning's tqdm bar): a tqdm bar on stderr, below it, cleared at the end;
* outside a run (command-line tools): a rich progress display on stderr, cleared at the end.

The ETA is the time left at the phase's average rate so far (rich's own estimate needs several updates within
30 seconds, which a phase of slow steps, such as importance-sampling chunks on a CPU, never gives it).

Updating costs a few microseconds and reads nothing from the accelerator; callers that want the bar to follow
the GPU rather than the kernel queue synchronise themselves, and only when :attr:`PhaseProgress.shown`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress_enabled(trainer: Any = None) -> bool:
    """Whether phase progress is shown: stderr is a terminal and, for a Lightning run, its progress bar is on."""
    if not stderr_is_terminal():
        return False
    if trainer is None:
        return True
    bar = getattr(trainer, "progress_bar_callback", None)
    return bar is not None and bool(getattr(bar, "is_enabled", False))


def _live_rich_bar(trainer: Any):
    """The trainer's RichProgressBar when its display is live (so a task can join it), else None."""
    from pytorch_lightning.callbacks import RichProgressBar

    bar = getattr(trainer, "progress_bar_callback", None)
    if not isinstance(bar, RichProgressBar) or bar.progress is None:
        return None
    live = getattr(bar.progress, "live", None)
    return bar if live is not None and getattr(live, "is_started", False) else None


class PhaseProgress:
    """One phase's progress bar (see the module docstring); a context manager. ``total=None``: no ETA."""

    def __init__(self, description: str, total: float | None, trainer: Any = None, unit: str = "it"):
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0.0
        self._started = time.monotonic()
        self._backend: str | None = None
        self._handle: Any = None
        self._task: Any = None
        if not progress_enabled(trainer):
            return
        if trainer is not None:
            rich_bar = _live_rich_bar(trainer)
            if rich_bar is not None:
                self._backend, self._handle = "lightning-rich", rich_bar
                self._task = rich_bar.progress.add_task(description, total=total)
                rich_bar.refresh()
                return
            from tqdm.auto import tqdm

            self._backend = "tqdm"
            self._handle = tqdm(total=total, desc=description, unit=unit, file=sys.stderr, leave=False,
                                dynamic_ncols=True)
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._backend = "rich"
        self._handle = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"), console=Console(stderr=True), transient=True,
        )
        self._handle.start()
        self._task = self._handle.add_task(description, total=total, eta="")

    @property
    def shown(self) -> bool:
        """Whether anything is displayed (False: every update is a no-op)."""
        return self._backend is not None

    def update(self, completed: float) -> None:
        """Set the amount done (in the units of ``total``)."""
        if self._backend is None:
            self.completed = completed
            return
        if self._backend == "tqdm":
            self._handle.update(completed - self.completed)
        elif self._backend == "rich":
            self._handle.update(self._task, completed=completed, eta=self.eta_text(completed))
        else:  # a task of the run's RichProgressBar, whose columns are Lightning's: the ETA goes in the description
            eta = self.eta_text(completed)
            self._handle.progress.update(self._task, completed=completed,
                                         description=f"{self.description}, {eta}" if eta else self.description)
            self._handle.refresh()
        self.completed = completed

    def eta_text(self, completed: float) -> str:
        """``"eta 0:03:20"`` at the average rate so far ("" before any progress or without a total)."""
        elapsed = time.monotonic() - self._started
        if not self.total or completed <= 0 or elapsed <= 0:
            return ""
        remaining = max(self.total - completed, 0.0) * elapsed / completed
        return f"eta {format_duration(remaining)}"

    def advance(self, amount: float = 1.0) -> None:
        self.update(self.completed + amount)

    def stepper(self, done: float, size: float) -> Callable[[float], None] | None:
        """A callback moving the bar through a chunk of ``size`` after ``done`` by the fraction of it finished
        (e.g. a network's ``generate(on_step=...)``); None when nothing is displayed."""
        if not self.shown:
            return None
        return lambda fraction: self.update(done + fraction * size)

    def close(self) -> None:
        backend, self._backend = self._backend, None
        if backend == "tqdm":
            self._handle.close()
        elif backend == "lightning-rich":
            progress = self._handle.progress
            if progress is not None and self._task in progress.task_ids:
                progress.remove_task(self._task)
            self._handle.refresh()
        elif backend == "rich":
            self._handle.stop()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``0:03:20``)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar (outside a Lightning run)."""
    with PhaseProgress(description, len(items)) as bar:
        for item in items:
            yield item
            bar.advance()
