"""``python scripts/summarize_search.py <sweep dir>``: what a hyperparameter search found.

Prints the best trial (its job directory, metric and parameters), a table of every trial (pruned, failed and
unfinished ones included, with the reason), and writes a plot of the metric against each searched parameter
(log x axis for log-sampled ones) to ``<sweep dir>/search_summary.png``. A multi-objective search (a list of
metrics) gets its Pareto front instead of a best trial, and a plot of the first two objectives with the front.

It reads the search's own files, so it works on an interrupted search too: ``search.yaml`` (the metric,
direction and search space, written before the first trial by ``hydra/sweeper=optuna_search``), every job's
``.hydra/overrides.yaml`` and ``results.json``, and the sweeper's ``optimization_results.yaml`` when the search
finished (its best value is checked against the jobs' own results).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hsvae.analysis.results import DESCRIPTION_FILE, read_overrides, unfinished_reason
from hsvae.analysis.results import SEARCH_RESULTS_FILE as RESULTS_FILE


class NotASearchError(ValueError):
    """The directory is not the sweep directory of a hyperparameter search."""


@dataclass
class Trial:
    """One job of the search: its number (= its job directory's name), the values it was given for the
    searched parameters, and its metrics (None when it failed, was pruned or has not finished: ``problem`` says
    why)."""

    number: int
    directory: Path
    params: dict[str, str]
    values: list[float] | None = None
    problem: str | None = None
    pruned: bool = False

    @property
    def value(self) -> float | None:
        """The (first) objective's value."""
        return None if self.values is None else self.values[0]


@dataclass
class Search:
    directory: Path
    metrics: list[str]
    directions: list[str]
    space: dict[str, dict[str, Any]]
    description: dict[str, Any]
    trials: list[Trial] = field(default_factory=list)
    #: the sweeper's optimization_results.yaml (None: the search did not finish)
    sweeper_result: dict[str, Any] | None = None

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    @property
    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.values is not None]

    def _signed(self, trial: Trial) -> list[float]:
        """The trial's values, each turned into one to minimise."""
        return [-v if d == "maximize" else v for v, d in zip(trial.values, self.directions)]

    def best(self) -> Trial | None:
        """The best completed trial by the search's direction (the earliest on a tie), or None."""
        done = self.completed
        if not done:
            return None
        return min(done, key=lambda t: (self._signed(t)[0], t.number))

    def pareto_front(self) -> list[Trial]:
        """The completed trials no other completed trial dominates (all objectives as good, one better)."""
        done = [(t, self._signed(t)) for t in self.completed]
        front = [t for t, a in done
                 if not any(all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)) for _, b in done)]
        return sorted(front, key=lambda t: t.number)


def _trial(job_dir: Path, metrics: list[str], space: dict[str, Any]) -> Trial:
    overrides = read_overrides(job_dir)
    trial = Trial(int(job_dir.name), job_dir, {name: overrides.get(name, "?") for name in space})
    path = job_dir / "results.json"
    if not path.is_file():
        trial.problem = "no results.json: failed (see its .log) or still running"
        return trial
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        trial.problem = f"corrupt results.json ({err})"
        return trial
    trial.problem = unfinished_reason(results)  # a pruned, failed or interrupted trial's record says why
    trial.pruned = results.get("status") == "pruned"
    if trial.problem:
        return trial
    recorded = results.get("optimized_metric") or {}
    names, given = recorded.get("name"), recorded.get("value")
    by_name = dict(zip(names, given)) if isinstance(names, list) and isinstance(given, list) else {names: given}
    values = []
    for metric in metrics:
        value = by_name.get(metric)
        if value is None:  # an objective that is the run's record, not a metric (wall_time_s)
            value = results.get("metrics", {}).get(metric, results.get(metric))
        if value is None:
            trial.problem = f"{metric} is not among its metrics"
            return trial
        if isinstance(value, str) or not math.isfinite(value):  # results.json writes NaN and inf as strings
            trial.problem = f"{metric} = {value} (diverged)"
            return trial
        values.append(float(value))
    trial.values = values
    return trial


def load_search(sweep_dir: str | Path) -> Search:
    """Read a search's sweep directory; :class:`NotASearchError` when it is not one."""
    directory = Path(sweep_dir)
    if not directory.is_dir():
        raise NotASearchError(f"{directory} does not exist or is not a directory")
    description_path = directory / DESCRIPTION_FILE
    if not description_path.is_file():
        raise NotASearchError(
            f"{directory} is not the directory of a hyperparameter search: it has no {DESCRIPTION_FILE}, which "
            "`python train.py -m hparams_search=<name>` (hydra/sweeper=optuna_search) writes before the first "
            "trial. Pass the sweep directory itself (logs/<task>/multiruns/<date>), not a trial's directory."
        )
    description = yaml.safe_load(description_path.read_text()) or {}
    metrics, directions = description["optimized_metric"], description.get("direction")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    directions = [directions] if isinstance(directions, str) else list(directions)
    search = Search(directory, metrics, directions, description.get("params") or {}, description)
    jobs = sorted((p for p in directory.iterdir() if p.name.isdigit() and (p / ".hydra" / "overrides.yaml").is_file()),
                  key=lambda p: int(p.name))
    search.trials = [_trial(p, search.metrics, search.space) for p in jobs]
    results = directory / RESULTS_FILE
    if results.is_file():
        search.sweeper_result = yaml.safe_load(results.read_text())
    return search


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def report(search: Search) -> str:
    """The text :func:`main` prints: the best trial (the Pareto front of a multi-objective search), the sweeper's
    agreement, and a table of all trials."""
    names = list(search.space)
    done, pruned = search.completed, [t for t in search.trials if t.pruned]
    objectives = ", ".join(f"{d} {m}" for d, m in zip(search.directions, search.metrics))
    lines = [
        f"search: {search.directory}",
        f"study {search.description.get('study_name')!r}: {objectives} over {', '.join(names)}; "
        f"{len(search.trials)} of {search.description.get('n_trials')} planned trials ran, {len(done)} completed, "
        f"{len(pruned)} pruned, {len(search.trials) - len(done) - len(pruned)} failed or unfinished",
    ]
    best = None if search.multi_objective else search.best()
    front = search.pareto_front() if search.multi_objective else []
    if search.multi_objective:
        lines.append(f"Pareto front: {len(front)} trial{'s' if len(front) != 1 else ''}")
        lines.extend(f"    trial {t.number}: " + ", ".join(f"{m} = {v!r}" for m, v in zip(search.metrics, t.values))
                     + "  " + " ".join(f"{n}={t.params[n]}" for n in names) for t in front)
    elif best is None:
        lines.append("best trial: none completed")
    else:
        lines.append(f"best trial: {best.number}  {search.metrics[0]} = {best.value!r}  ({best.directory})")
        lines.extend(f"    {name}={best.params[name]}" for name in names)
    if search.sweeper_result is None:
        lines.append(f"the sweeper wrote no {RESULTS_FILE}: the search was interrupted or is still running "
                     "(the trials above are the finished ones)")
    elif not search.multi_objective:
        value = search.sweeper_result.get("best_value")
        agrees = best is not None and value is not None and math.isclose(float(value), best.value, rel_tol=1e-9)
        lines.append(f"the sweeper's {RESULTS_FILE}: best_value {value!r} "
                     f"{'(the same trial)' if agrees else 'DIFFERS from the best job results.json'}")
    lines.append("")
    header = ["trial", "state", *search.metrics, *names, "note"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for t in search.trials:
        state = ("best" if t is best else "front" if t in front else "complete" if t.values is not None
                 else "pruned" if t.pruned else "failed")
        values = t.values or [None] * len(search.metrics)
        lines.append("| " + " | ".join([str(t.number), state, *map(_fmt, values), *(t.params[n] for n in names),
                                        t.problem or ""]) + " |")
    return "\n".join(lines) + "\n"


def plot_pareto(search: Search, path: str | Path) -> Path:
    """The first two objectives of every completed trial, the Pareto front joined and starred."""
    fig, ax = pyplot().subplots(figsize=(5.2, 4.2))
    done, front = search.completed, search.pareto_front()
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=22, alpha=0.7, label="completed")
    ordered = sorted(front, key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in ordered], [t.values[1] for t in ordered], "*-", color="tab:red", markersize=11,
            label=f"Pareto front ({len(front)})")
    ax.set_xlabel(f"{search.metrics[0]} ({search.directions[0]})")
    ax.set_ylabel(f"{search.metrics[1]} ({search.directions[1]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{search.description.get('study_name') or search.directory.name}: {len(done)} completed trials",
                 fontsize="medium")
    return save(fig, path)


def plot_search(search: Search, path: str | Path) -> Path:
    """The metric of every completed trial against each searched parameter (one panel each; the best trial
    starred; log x axis for log-sampled parameters, one position per choice for categorical ones)."""
    names = list(search.space) or ["(none)"]
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = pyplot().subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    from matplotlib.ticker import NullFormatter

    best = search.best()
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        spec = search.space.get(name, {})
        choices = [str(c) for c in spec.get("choices", [])]

        def position(raw: str | None) -> float | None:
            if choices:
                return float(choices.index(raw)) if raw in choices else None
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None

        done = [(position(t.params.get(name)), t) for t in search.completed]
        done = [(x, t) for x, t in done if x is not None]
        ax.scatter([x for x, _ in done], [t.value for _, t in done], s=22, alpha=0.8, label="completed")
        failed = [x for x in (position(t.params.get(name)) for t in search.trials if t.value is None) if x is not None]
        if failed:  # along the bottom edge: where in the space trials crashed or diverged
            ax.scatter(failed, [0.03] * len(failed), transform=ax.get_xaxis_transform(), marker="x",
                       color="tab:gray", label="failed")
        for x, t in done:
            if t is best:
                ax.scatter(x, t.value, marker="*", s=160, color="tab:red", label=f"best (trial {t.number})")
        if choices:
            ax.set_xticks(range(len(choices)), choices, rotation=30 if max(map(len, choices)) > 6 else 0)
            ax.set_xlim(-0.5, len(choices) - 0.5)
        elif "low" in spec:
            if spec.get("log"):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                pad = (spec["high"] / spec["low"]) ** 0.03
                ax.set_xlim(spec["low"] / pad, spec["high"] * pad)
            else:
                pad = 0.03 * (spec["high"] - spec["low"])
                ax.set_xlim(spec["low"] - pad, spec["high"] + pad)
        if i == 0:
            ax.legend(fontsize="small")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(search.metrics[0])
    fig.suptitle(f"{search.description.get('study_name') or search.directory.name}: {search.directions[0]} "
                 f"{search.metrics[0]} ({len(search.completed)} completed trials)", fontsize="medium")
    return save(fig, path)


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported when a tool draws: a summary without a plot needs none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the search's sweep directory (logs/<task>/multiruns/<date>)")
    parser.add_argument("--plot", type=Path, default=None, help="where to write the plot "
                        "(default: <sweep_dir>/search_summary.png)")
    parser.add_argument("--no-plot", action="store_true", help="only print the summary")
    args = parser.parse_args(argv)
    try:
        search = load_search(args.sweep_dir)
    except NotASearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(search), end="")
    if not args.no_plot:
        plot = plot_pareto if search.multi_objective else plot_search
        path = plot(search, args.plot or search.directory / "search_summary.png")
        print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
