"""A CSV logger that continues the history of the run it resumes.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a run resumed into its own
directory would lose every epoch before the checkpoint. :meth:`CSVLogger.continue_history` keeps the rows the
checkpoint covers (epochs up to and including the checkpoint's) and drops the rows of the interrupted epoch,
which the resumed run trains again: every epoch appears once.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class CSVLogger(_LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` with :meth:`continue_history` for resumed runs."""

    _kept_rows: list[dict[str, str]] | None = None

    def continue_history(self, until_epoch: int) -> int:
        """Keep the existing ``metrics.csv`` rows of epochs ``<= until_epoch``; call before the first log.
        Returns the number of rows kept."""
        path = Path(self.log_dir) / "metrics.csv"
        if not path.is_file():
            return 0
        with path.open(newline="") as f:
            # a file an interruption left torn (Lightning rewrites it whole when a new column appears): fields
            # beyond the header (DictReader's None key) are dropped, missing ones are empty
            rows = [{k: ("" if v is None else v) for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
        kept = [row for row in rows if _epoch(row) is not None and _epoch(row) <= until_epoch]
        self._kept_rows = kept
        self.kept_history = [dict(row) for row in kept]
        return len(kept)

    def final_epoch_metrics(self) -> dict[str, float]:
        """The metrics the kept history logged in its last epoch (each column's last value there): what a resumed
        fit that trains no further epoch (it had ended when the run was interrupted) reports as its final ones."""
        rows = getattr(self, "kept_history", None) or []
        last = max((_epoch(row) for row in rows), default=None)
        out: dict[str, float] = {}
        for row in rows:
            if _epoch(row) == last:
                out.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
        return out

    @property
    def experiment(self):  # noqa: D102 -- Lightning's, with the kept rows queued before anything new
        created = self._experiment is None
        writer = super().experiment
        if created and self._kept_rows and isinstance(writer, ExperimentWriter):
            # the writer has just removed the old file; its first save writes these rows back, then the new ones
            writer.metrics[:0] = self._kept_rows
            self._kept_rows = None
        return writer


def _epoch(row: dict[str, str]) -> float | None:
    try:
        return float(row.get("epoch") or "nan") if row.get("epoch") else None
    except ValueError:
        return None
