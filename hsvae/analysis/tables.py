"""``python scripts/make_tables.py`` / ``hsvae-tables``: turn a multirun's results.json files into a table.

    hsvae-tables logs/train/multiruns/<date> --metrics test/log_likelihood --paper experiments/mnist_table/paper.yaml \
        --out experiments/mnist_table/README_table.md --plot latent.dim

Runs are grouped by the overrides that vary between them (each job's ``.hydra/overrides.yaml``; the
seed is never a grouping key), and each cell reports mean +- standard deviation and the run count. Job
directories without a readable results.json of the current format are reported as missing, by group,
instead of being dropped. Runs whose configs differ in anything but the swept keys, the seed and paths
are not mixed silently: that is an error unless ``--allow-mixed``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hsvae.analysis.results import RESULTS_FORMAT, read_overrides, unfinished_reason
from hsvae.analysis.search_summary import pyplot, save
from hsvae.utils.progress import track

#: Config keys that legitimately differ between runs of one table.
IGNORED_PREFIXES = ("paths.", "hydra.", "dataset.m1.", "seed", "dataset.seed", "dataset.split_seed", "logger.", "callbacks.", "trainer.devices",
                    "trainer.accelerator", "trainer.default_root_dir", "tags", "task_name", "ckpt_path", "allow_overwrite",
                    "auto_resume", "budget_minutes", "gpu_per_job", "dataset.verify", "dataset.cache_dir")


@dataclass
class Job:
    directory: Path
    overrides: dict[str, str]
    results: dict | None = None
    problem: str | None = None


@dataclass
class Cell:
    key: tuple
    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    runs: int = 0
    missing: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)


def find_jobs(roots: list[Path]) -> list[Job]:
    """Every job directory under ``roots``: those with a results.json and those Hydra started (``.hydra/``)."""
    dirs: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        for marker in list(root.rglob("results.json")) + list(root.rglob(".hydra")):
            job_dir = marker.parent
            if (job_dir / ".hydra" / "multirun.yaml").exists() and not (job_dir / "results.json").exists() and not (
                job_dir / ".hydra" / "overrides.yaml"
            ).exists():
                continue  # the sweep's own folder
            if (job_dir / "stack.json").exists() and not (job_dir / "results.json").exists():
                continue  # a stack's own folder (seeds=[...]): its members' folders below are the runs
            dirs.add(job_dir)
    jobs = []
    for job_dir in track(sorted(dirs), "reading runs"):
        job = Job(job_dir, read_overrides(job_dir))
        path = job_dir / "results.json"
        if not path.exists():
            job.problem = "no results.json (failed or unfinished)"
        else:
            try:
                data = json.loads(path.read_text())
                if data.get("format") != RESULTS_FORMAT:
                    job.problem = f"results.json of format {data.get('format')!r}, expected {RESULTS_FORMAT}"
                elif unfinished_reason(data):  # a failed or interrupted run's record
                    job.problem = unfinished_reason(data)
                else:
                    job.results = data
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
                job.problem = f"corrupt results.json ({err})"
        if job.problem:
            warnings.warn(f"{job_dir}: {job.problem}; counted as missing", stacklevel=2)
        jobs.append(job)
    return jobs


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}


def _ignored(key: str) -> bool:
    return key.startswith(IGNORED_PREFIXES) or key in {p.rstrip(".") for p in IGNORED_PREFIXES}


def mixed_keys(jobs: list[Job]) -> list[str]:
    """Config keys on which the finished runs of one cell disagree (seed, paths and loggers aside)."""
    flats = [{k: v for k, v in _flatten(job.results.get("config", {})).items() if not _ignored(k)}
             for job in jobs if job.results is not None]
    return sorted({k for flat in flats[1:] for k in set(flat) | set(flats[0]) if flat.get(k) != flats[0].get(k)})


def group(jobs: list[Job], by: list[str] | None, metrics: list[str],
          always: set[str] = frozenset()) -> tuple[list[str], dict[tuple, Cell]]:
    """Cells of the runs: by ``by``, or by the overrides that vary between them and those of ``always`` that they
    set (the keys a paper's table is matched on: a single cell is still named)."""
    keys = set().union(*(j.overrides for j in jobs)) if jobs else set()
    if by is None:
        by = sorted(k for k in keys if k != "seed" and (len({j.overrides.get(k) for j in jobs}) > 1 or k in always))
    cells: dict[tuple, Cell] = {}
    for job in jobs:
        key = tuple(job.overrides.get(k, "") for k in by)
        cell = cells.setdefault(key, Cell(key))
        cell.jobs.append(job)
        if job.results is None:
            cell.missing.append(f"{job.directory.name}: {job.problem}")
            continue
        cell.runs += 1
        wall = job.results.get("wall_time_s")
        if isinstance(wall, (int, float)) and math.isfinite(wall):
            cell.wall_times.append(float(wall))
        for m in metrics:
            value = job.results.get("metrics", {}).get(m)
            if isinstance(value, (int, float)) and math.isfinite(value):
                cell.values[m].append(float(value))
            else:
                cell.missing.append(f"{job.directory.name}: no finite {m}")
    return by, cells


def _fmt(values: list[float], scale: float, digits: int = 2) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * abs(scale):.{digits}f}"


def paper_lookup(paper: dict | None, by: list[str], key: tuple) -> dict[str, object]:
    if not paper:
        return {}
    here = dict(zip(by, key))
    for entry in paper.get("entries", []):
        if all(str(here.get(k)) == str(v) for k, v in entry.get("match", {}).items()):
            return entry.get("values", {})
    return {}


def _sort_key(key: tuple):
    return tuple((0, float(v)) if _is_number(v) else (1, str(v)) for v in key)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):g}" if values else "—"


def gap_columns(paper: dict | None, metrics: list[str]) -> dict[str, str]:
    """``{paper column: our metric}`` for the paper's columns that name one of ``metrics`` (the paper file's
    ``metrics:`` map, e.g. ``{LL: test/log_likelihood}``): the table shows our mean minus the paper's number."""
    named = (paper or {}).get("metrics") or {}
    return {column: metric for column, metric in named.items() if metric in metrics}


def _gap(values: list[float], reference: object, scale: float, digits: int) -> str:
    if not values or not _is_number(reference):
        return "—"
    return f"{statistics.fmean(values) * scale - float(reference):+.{digits}f}"


def _duration(seconds: float) -> str:
    """``9.2 s``, ``14 min``, ``2.3 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def markdown_table(
    by: list[str], cells: dict[tuple, Cell], metrics: list[str], paper: dict | None, scale: float, digits: int = 2,
    medians: list[str] = (), wall_time: bool = False,
) -> str:
    """One row per cell: the runs, each metric's mean ± standard deviation (times ``scale``), the paper's values and
    our mean's gap to each paper value that names its metric (:func:`gap_columns`), the median of each of
    ``medians`` (unscaled, e.g. ``best/epoch``), the mean wall time per run and the cell's total (``wall_time``),
    and the count of missing runs."""
    paper_cols = list(paper.get("columns", [])) if paper else []
    gaps = gap_columns(paper, metrics)
    header = [*by, "runs", *metrics, *(f"paper: {c}" for c in paper_cols), *(f"gap: {c}" for c in gaps),
              *(f"median {m}" for m in medians), *(["time/run", "time"] if wall_time else []), "missing"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(cells, key=_sort_key):
        cell = cells[key]
        ref = paper_lookup(paper, by, key)
        wall = ([_duration(statistics.fmean(cell.wall_times)), _duration(sum(cell.wall_times))] if cell.wall_times
                else ["—", "—"]) if wall_time else []
        row = [*key, str(cell.runs), *(_fmt(cell.values.get(m, []), scale, digits) for m in metrics),
               *(str(ref.get(c, "—")) for c in paper_cols),
               *(_gap(cell.values.get(m, []), ref.get(c), scale, digits) for c, m in gaps.items()),
               *(_median(cell.values.get(m, [])) for m in medians),
               *wall, str(len(cell.missing)) if cell.missing else ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(by: list[str], cells: dict[tuple, Cell], metric: str, x_key: str, path: Path, scale: float) -> None:
    if x_key not in by:
        raise ValueError(f"--plot {x_key}: not a grouping key (grouping keys: {by})")
    xi = by.index(x_key)
    series: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
    for key, cell in cells.items():
        values = cell.values.get(metric, [])
        if not values or not _is_number(key[xi]):
            continue
        rest = key[:xi] + key[xi + 1 :]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        series[rest].append((float(key[xi]), statistics.fmean(values) * scale, sd * abs(scale)))
    fig, ax = pyplot().subplots(figsize=(5.5, 4))
    rest_names = by[:xi] + by[xi + 1 :]
    for rest, pts in sorted(series.items(), key=lambda kv: _sort_key(kv[0])):
        pts.sort()
        label = ", ".join(f"{n}={v}" for n, v in zip(rest_names, rest)) or metric
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=label)
    ax.set_xlabel(x_key)
    ax.set_ylabel(metric if scale == 1 else f"{metric} x {scale:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    """The command line; a missing or unreadable folder or file is one line and exit 2."""
    try:
        return _main(argv)
    except (OSError, yaml.YAMLError) as err:
        where = getattr(err, "filename", None)
        text = " ".join(str(err).split()) if where is None else f"{err.strerror or err}: {where}"
        print(f"error: {text} (make_tables reads a sweep's folder, or folders of runs, each with its results.json; "
              "--paper a YAML file as in experiments/*/paper.yaml)", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="multirun directories (or any folders of runs)")
    parser.add_argument("--metrics", nargs="+", default=["test/log_likelihood"], help="results.json metric keys")
    parser.add_argument("--by", nargs="*", default=None, help="grouping override keys (default: those that vary)")
    parser.add_argument("--paper", type=Path, default=None, help="YAML file with the paper's values")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply metrics by this (e.g. 100 for percent)")
    parser.add_argument("--digits", type=int, default=2, help="decimals in the table")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here (default: stdout)")
    parser.add_argument("--plot", default=None, metavar="KEY", help="also plot the first metric against KEY")
    parser.add_argument("--allow-mixed", action="store_true", help="group runs whose configs differ elsewhere")
    parser.add_argument("--medians", nargs="+", default=[], metavar="METRIC",
                        help="also the median of these metrics per cell, unscaled (e.g. best/epoch)")
    parser.add_argument("--wall-time", action="store_true",
                        help="also the mean wall time per run and each cell's total")
    args = parser.parse_args(argv)

    jobs = find_jobs(args.roots)
    finished = [j for j in jobs if j.results is not None]
    if not finished:
        print(f"error: no readable results.json under {', '.join(map(str, args.roots))} "
              f"({len(jobs)} job directories found)", file=sys.stderr)
        return 2
    available = sorted({m for j in finished for m in j.results.get("metrics", {})})
    unknown = [m for m in [*args.metrics, *args.medians] if m not in available]
    if unknown:
        print(f"error: unknown metric{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: no run has "
              f"{'them' if len(unknown) > 1 else 'it'}. The runs' metrics: {', '.join(available) or 'none'}",
              file=sys.stderr)
        return 2
    paper = yaml.safe_load(args.paper.read_text()) if args.paper else None
    match_keys = {k for entry in (paper or {}).get("entries", []) for k in entry.get("match", {})}
    by, cells = group(jobs, args.by, [*args.metrics, *args.medians], always=match_keys)
    for key, cell in cells.items():
        differing = mixed_keys(cell.jobs)
        if differing and not args.allow_mixed:
            print(f"error: the runs of cell {dict(zip(by, key))} differ in config keys that are not grouping keys, "
                  f"so averaging them would mix different experiments: {', '.join(differing[:20])}. "
                  "Group by them (--by ...) or pass --allow-mixed.", file=sys.stderr)
            return 3
    table = markdown_table(by, cells, args.metrics, paper, args.scale, args.digits, args.medians, args.wall_time)
    missing = [(k, m) for k, c in cells.items() for m in c.missing]
    if missing:
        table += "\nMissing or failed runs:\n" + "".join(f"- {dict(zip(by, k))}: {m}\n" for k, m in missing)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        print(f"wrote {args.out}")
    else:
        print(table)
    if args.plot:
        path = (args.out.with_suffix(".png") if args.out else Path("table.png"))
        plot(by, cells, args.metrics[0], args.plot, path, args.scale)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
