"""Each member's checkpoint selection, early stopping and history, on its own metric: :class:`MemberSelection`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping

from .module import StackedTask


class MemberSelection(Checkpoint):
    """Per member of a :class:`~hsvae.stack.module.StackedTask`, after each validation epoch: its best epoch on its
    own value of ``monitor`` (strict improvement in ``mode``, as ``ModelCheckpoint``'s best), its early stopping
    through its own copy of the run's ``EarlyStopping`` (Lightning's rule, patience and ``min_delta``: a member that
    stops keeps training with the others but is no longer selected; the fit ends when every member has stopped),
    and its per-epoch metrics (``rows[i]``: ``(step, metrics)`` as its loggers receive them: its validation metrics,
    the stack's ``train/`` metrics and ``epoch``).

    After the fit: ``best_states[i]`` (member i's network at its best epoch, on the CPU), ``best_epochs[i]``,
    ``best_scores[i]`` and ``best_metrics[i]`` (its validation metrics there). ``stopping`` makes a member's
    ``EarlyStopping`` (from the run's config; None: members never stop)."""

    def __init__(self, k: int, monitor: str, mode: str = "max", stopping: Callable[[], EarlyStopping] | None = None):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not (isinstance(k, int) and k >= 1):
            raise ValueError(f"k (the number of members) must be an integer >= 1, got {k!r}")
        self.k, self.monitor, self.mode = k, monitor, mode
        self.stoppers = [stopping() for _ in range(k)] if stopping is not None else None
        sign = float("-inf") if mode == "max" else float("inf")
        self.best_states: list[dict[str, torch.Tensor] | None] = [None] * k
        self.best_scores, self.best_epochs = [sign] * k, [-1] * k
        self.best_metrics: list[dict[str, float]] = [{} for _ in range(k)]
        self.stopped = [False] * k
        self.rows: list[list[tuple[int, dict[str, float]]]] = [[] for _ in range(k)]

    def _better(self, score: float, best: float) -> bool:
        return score > best if self.mode == "max" else score < best

    def on_train_epoch_end(self, trainer: pl.Trainer, stack: StackedTask) -> None:
        # a Checkpoint's hook runs after the module's: the epoch's validation and its train/ metrics are logged
        metrics = stack.member_metrics
        stack.member_metrics = None
        step = max(trainer.global_step - 1, 0)
        # the training step sees the members' rows as one batch: its train/ metrics are the stack's mean, recorded
        # under stack/ so that no member's record carries them as its own
        train = {f"stack/{k}": float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        values = {name: v.tolist() for name, v in (metrics or {}).items()}  # one host read per epoch
        for i in range(self.k):
            row = {**{name: v[i] for name, v in values.items()}, **train, "epoch": trainer.current_epoch}
            self.rows[i].append((step, row))
            if metrics is None or self.stopped[i]:
                continue
            score = values[self.monitor][i]
            if self._better(score, self.best_scores[i]):
                self.best_scores[i], self.best_epochs[i] = score, trainer.current_epoch
                self.best_metrics[i] = {name: v[i] for name, v in values.items()}
                self.best_states[i] = {k: v.detach().cpu().clone() for k, v in stack.member_state(i).items()}
            if self.stoppers is not None:  # (on its own monitor, which may differ from the selection's)
                stopper = self.stoppers[i]
                self.stopped[i] = stopper._evaluate_stopping_criteria(torch.tensor(values[stopper.monitor][i]))[0]
        if all(self.stopped):
            trainer.should_stop = True

    # a stack's last checkpoint continues every member's selection where it was
    _STATE = ("best_states", "best_scores", "best_epochs", "best_metrics", "stopped", "rows")

    def state_dict(self) -> dict:
        state = {name: getattr(self, name) for name in self._STATE}
        if self.stoppers is not None:
            state["stoppers"] = [stopper.state_dict() for stopper in self.stoppers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        for name in self._STATE:
            setattr(self, name, state_dict[name])
        for stopper, saved in zip(self.stoppers or (), state_dict.get("stoppers", ())):
            stopper.load_state_dict(saved)


def member_metrics_at(rows: Sequence[tuple[int, dict[str, float]]], prefix: str) -> dict[str, float]:
    """The metrics starting with ``prefix`` of a member's last epoch that has them."""
    for _, row in reversed(rows):
        found = {k: v for k, v in row.items() if k.startswith(prefix)}
        if found:
            return found
    return {}
