"""The README's commands are tests (issue #13).

Every ```bash block of README.md and experiments/*/README.md is parsed; each line that starts (after its
comment is stripped, ``\\`` continuations joined, ``&&`` split and a leading ``VAR=value`` taken off) with
``python ``, ``hsvae-``, ``pip `` or ``pytest`` is a command; ``export``, ``VAR=value``, ``for ... do`` and
``done`` lines set its environment and loop variables, and any other line fails the extraction. Every ```python
block is a command too (run as a script). So a command added to the docs is tested without anyone remembering
to add it here; :data:`TREATMENTS` is the one list of the commands that are not simply run, each with its reason.

How a command runs (``test_readme_command``, marked ``slow`` and ``data``):

* in a fresh working directory per Markdown block: a copy of the repository's tracked (and untracked, not
  ignored) files, as a fresh clone would have them, so that ``python train.py`` writes ``./logs`` there and
  ``make_tables --out experiments/...`` overwrites the copy, never the repository; the commands of a block run
  in order in that directory (a command's test first runs the block's earlier commands that this process has
  not run yet, so a single test can be selected on its own);
* exactly as written, through ``bash``, with the block's exported variables (``HSVAE_DATA_DIR`` replaced by the
  test's datasets folder), its shell variables, and each ``for`` loop narrowed to its first value;
* placeholders (``<date>``, ``<run>``, ``<job>``, ``/.../``) are filled from what the earlier commands wrote:
  the newest path in the working directory that matches the placeholder's path with ``*`` for each
  placeholder (``TREATMENTS`` can give the pattern where the newest match is not the intended one);
* plus only size-reducing overrides (:data:`REDUCE`: epochs, batches, importance samples, trials, molecules,
  a sweep narrowed to the first value of every swept key), never ``hydra.run.dir`` / ``hydra.sweep.dir``;
* then the exit status must be 0, a training command must have written ``results.json`` in its output
  directory (``hydra.run.dir``, else the newest ``logs/<task>/runs/*``; for ``-m`` in every job directory
  ``<sweep dir>/<n>/``; for a stack, ``seeds=[...]``, in every ``seed_<s>/`` of it), and a script's ``--out``
  file must exist.

``compose`` commands (SLURM, GPUs) are composed instead, with the command line as written (``-m`` dropped and
sweeps narrowed, since Hydra's ``--cfg`` does not combine with ``-m``) plus ``--cfg all --resolve``; where later
commands of the block read a GPU sweep's output, it is then also run on the CPU without ``trainer=gpu``. A script
is checked against its ``--help`` (every option it uses exists). ``skip`` commands (``pip install``, ``pytest``)
are reported as skipped with their reason. Known bugs being fixed elsewhere are in :data:`KNOWN_ISSUES` (xfail).
tests/conftest.py sends the tests of one block to one pytest-xdist worker (see :func:`xdist_scope`).

The fast tests (default tier) check the extraction, that every command has a treatment and that every exemption
still matches a command; that every Hydra command composes with its overrides is checked in the slow tier
(~11 s), beside the commands' runs.
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from hsvae.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in REPO.glob("experiments/*/README.md"))]
#: How a command line starts (after VAR=value prefixes): anything else in a bash block is an error.
PROGRAMS = re.compile(r"(python|hsvae-[\w-]+|pip|pytest)(\s|$)")
#: Seconds one command may take.
TIMEOUT = 900


# ------------------------------------------------------------------------------------------------ treatments
@dataclass(frozen=True)
class Treatment:
    """What the test does with a command: ``run`` (the default), ``compose`` or ``skip``."""

    mode: str = "run"
    reason: str = ""
    #: Overrides that replace the default narrowing of a sweep (the first value of every swept key).
    narrow: tuple[str, ...] = ()
    #: Placeholder path as written -> glob pattern (relative to the working directory) of what fills it.
    fill: tuple[tuple[str, str], ...] = ()
    #: Commands run first in the same working directory: (Markdown file, regex of a command there, narrow), or
    #: (None, a command line written here, ()) where the README only describes it in words.
    before: tuple[tuple[str | None, str, tuple[str, ...]], ...] = ()
    #: ``compose`` only: then also run it on the CPU without these tokens, for the commands after it in its block.
    stand_in_without: tuple[str, ...] = ()
    #: A bash script run first in the working directory (after ``before``), for a state the README presupposes.
    setup: str = ""


def _gpu(why: str = "needs a GPU", **kw) -> Treatment:
    return Treatment("compose", f"{why} (CI has none): composed as written, not trained", **kw)


SLURM = Treatment("compose", "needs a SLURM cluster: composed as written (launcher config included), not submitted")
#: The one list of commands that are not simply run (file, regex searched in the command as written): each
#: regex must match at least one command, and no command may match two entries (test_manifest_matches_commands).
TREATMENTS: list[tuple[str, str, Treatment]] = [
    # installing and the suite itself
    ("*", r"^pip install -e ", Treatment("skip", "CI installs the package and its extras (.ci/run)")),
    ("*", r"^pip install torch .*--index-url", Treatment("skip", "the CPU build from PyTorch's own index, which CI "
                                                               "cannot reach; CI installs PyPI's torch (.ci/run)")),
    ("*", r"^pip install rdkit", Treatment("skip", "CI installs RDKit with the dev extra (the chem extra)")),
    ("*", r"^(python -m )?pytest\b", Treatment("skip", "the test suite itself: CI runs it")),
    # README.md
    ("README.md", r"experiment=link_prediction launcher=joblib .*trainer=gpu", _gpu()),
    ("README.md", r"launcher=slurm", SLURM),
    ("README.md", r"trainer=ddp trainer\.devices=4", _gpu("needs 4 GPUs")),
    # make_tables --plot latent.dim after these sweeps needs two values of latent.dim
    ("README.md", r"^python train\.py -m experiment=mnist_table$", Treatment(narrow=("latent.dim=2,5",))),
    ("experiments/mnist_table/README.md", r"-m experiment=mnist_table launcher=joblib",
     Treatment(narrow=("latent.dim=2,5",))),
    # "resume an interrupted run": every run of the block has finished, so one is interrupted first (Ctrl-C, i.e.
    # SIGINT, once its first last.ckpt is written; `set -m` because bash starts background jobs ignoring SIGINT);
    # it is then the newest last.ckpt, and the resume trains it to 5 epochs
    ("README.md", r"^python train\.py ckpt_path=.*/last\.ckpt", Treatment(narrow=("trainer.max_epochs=5",), setup=(
        "set -m\n"
        "python train.py trainer.max_epochs=1000 +trainer.limit_train_batches=2 +trainer.limit_val_batches=2 "
        "evaluation.ll.samples=2 hydra.run.dir=logs/train/runs/interrupted &\n"
        "for i in $(seq 1200); do [ -e logs/train/runs/interrupted/checkpoints/last.ckpt ] && break; sleep 0.1; done\n"
        "kill -INT %1\n"
        "wait %1; echo \"interrupted run: exit status $?\"\n"
        "test -e logs/train/runs/interrupted/checkpoints/last.ckpt"))),
    # experiments/latent_comparison: the GPU sweep is composed, then run on the CPU so that make_tables and
    # interpolate.py after it have a sweep to read
    ("experiments/latent_comparison/README.md", r"-m experiment=latent_comparison trainer=gpu",
     _gpu(stand_in_without=("trainer=gpu",), narrow=("latent.dim=2,5",))),
    # its make_tables also reads the seed-1 runs, which the block only describes in a comment ("# seed 1: the same
    # with seed=1, into logs/latent_comparison/cpu_budget_seed1/"): that command, written out
    ("experiments/latent_comparison/README.md", r"make_tables\.py logs/latent_comparison/cpu_budget ",
     Treatment(before=((None, "python train.py experiment=latent_comparison model=conv_vae dataset.val_size=10000 "
                              "dataset.eval_batch_size=500 model.scheduler=null "
                              "callbacks.model_checkpoint.monitor=val/elbo evaluation=[ll,m1] evaluation.ll.samples=100 "
                              "latent=gaussian latent.dim=2 seed=1 trainer.max_epochs=4 callbacks.progress_bar=null "
                              "hydra.run.dir=logs/latent_comparison/cpu_budget_seed1/gaussian_d2", ()),))),
    # experiments/semisupervised: the next command reuses one of this sweep's M1s (combination=ss: a vMF, d = 10)
    ("experiments/semisupervised/README.md", r"^python train\.py -m experiment=semisupervised_table$",
     Treatment(narrow=("combination=ss", "m1.latent.dim=10", "latent.dim=10"))),
    ("experiments/semisupervised/README.md", r"m1\.ckpt_path=logs/\.\.\./checkpoints/best\.ckpt",
     Treatment(fill=(("logs/.../checkpoints/best.ckpt",
                      "logs/semisupervised_table/multiruns/*/0/m1/checkpoints/best.ckpt"),))),
    # $R/2 is job 2 of experiments/mnist_table's CPU-budget sweep (the Gaussian M1 with d = 10): that command first,
    # narrowed to the three jobs that make job 2 that M1
    ("experiments/semisupervised/README.md", r"m1\.ckpt_path=\$R/2/",
     Treatment(before=(("experiments/mnist_table/README.md", r"hydra\.sweep\.dir=logs/mnist_table/multiruns/cpu_budget",
                        ("latent=gaussian", "latent.dim=2,5,10")),))),
    # experiments/smiles
    ("experiments/smiles/README.md", r"bench_smiles\.py .*--device cuda",
     Treatment("compose", "needs CUDA: its options are checked against the script's --help, not run")),
    ("experiments/smiles/README.md", r"-m experiment=smiles trainer=gpu$", _gpu(stand_in_without=("trainer=gpu",))),
    ("experiments/smiles/README.md", r"-m experiment=smiles trainer=gpu seed=1,2", _gpu()),
]

#: Commands that fail today because of bugs being fixed elsewhere: xfail(strict=False), each with the reason.
#: (file, regex of the command as written) -> reason. Remove an entry once its fix is merged.
KNOWN_ISSUES: dict[tuple[str, str], str] = {}

#: Commands that cannot run on a CI machine (no GPU, no SLURM, no network, data missing): the fast test fails
#: when one of them is treated as ``run``.
CANNOT_RUN_HERE = [
    (r"trainer=gpu", "needs a GPU"),
    (r"launcher=slurm", "needs SLURM"),
    (r"trainer=ddp(?!.*trainer\.accelerator=cpu)", "needs several GPUs"),
    (r"--device cuda", "needs CUDA"),
    (r"dataset=\S*pubmed", "PubMed's raw files are not in the shared data"),
    (r"^pip ", "installs packages"),
    (r"^(python -m )?pytest\b", "the suite itself"),
]

#: The size-reducing overrides: (key, value, config key that must exist). Each is applied where that key
#: exists in the command's composed config (a "+" key is added, the others must be there), replacing the
#: command's own value only when ours is smaller. Sweeps are narrowed to the first value of every swept key
#: (TREATMENTS' ``narrow`` can keep more) and searches to ``hydra.sweeper.n_trials``.
REDUCE: dict[str, list[tuple[str, int, str]]] = {
    "train": [
        ("trainer.max_epochs", 1, "trainer.max_epochs"),
        ("+trainer.limit_train_batches", 2, "trainer"),
        ("+trainer.limit_val_batches", 2, "trainer"),
        ("+trainer.limit_test_batches", 2, "trainer"),
        ("evaluation.ll.samples", 2, "evaluation.ll.samples"),  # importance samples of the test log-likelihood
        ("hydra.sweeper.n_trials", 2, "hydra.sweeper.n_trials"),  # an Optuna search's trials
        # SMILES (dataset=zinc250k): molecules read, batch sizes and decoded strings
        ("dataset.max_molecules", 2000, "dataset.max_molecules"),
        ("dataset.batch_size", 8, "dataset.max_molecules"),
        ("dataset.eval_batch_size", 8, "dataset.max_molecules"),
        ("evaluation.molecules.n_samples", 8, "evaluation.molecules.n_samples"),
        ("evaluation.molecules.n_reconstructions", 8, "evaluation.molecules.n_samples"),
        ("evaluation.molecules.batch_size", 8, "evaluation.molecules.n_samples"),
    ],
    # (eval.py keeps the training run's importance samples, already reduced when the test trained it)
    "eval": [("+trainer.limit_test_batches", 2, "trainer")],
}
#: List-valued config keys that get entries appended: an M1 trained inside an M1+M2 job keeps its own protocol's
#: epochs (dataset=mnist: up to 1000) unless its overrides say otherwise.
REDUCE_APPEND: dict[str, list[str]] = {"m1.overrides": ["trainer.max_epochs=1"]}


# ------------------------------------------------------------------------------------------------ extraction
@dataclass(frozen=True)
class Command:
    file: str
    line: int
    index: int  # the n-th command of that line (``a && b``)
    block: int  # line of the block's opening fence
    text: str  # as written: comment stripped, continuations joined
    env: tuple[tuple[str, str], ...] = ()  # exported before it in the block
    variables: tuple[tuple[str, tuple[str, ...]], ...] = ()  # shell and loop variables (loops: every value)

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}" + (f"#{self.index + 1}" if self.index else "")

    @property
    def program(self) -> str:
        """The command without its VAR=value prefix."""
        return _ENV_PREFIX.match(self.text).group(2)

    @property
    def kind(self) -> str:
        if self.text.startswith("<python block>"):
            return "python"
        words = self.program.split()
        if words[0] in ("pip", "pytest"):
            return words[0]
        target = words[0] if words[0].startswith("hsvae-") else (words[1] if len(words) > 1 else "")
        if target in ("train.py", "hsvae-train"):
            return "train"
        if target in ("eval.py", "hsvae-eval"):
            return "eval"
        return "script"


_ENV_PREFIX = re.compile(r"((?:\w+=\S*\s+)*)(.*)", re.S)
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_LOOPS = re.compile(r"(?:\s*for\s+\w+\s+in\s+[^;]*;\s*do\s*)+")
_LOOP = re.compile(r"for\s+(\w+)\s+in\s+([^;]*);\s*do")
_DONE = re.compile(r"\s*done(?:\s*;\s*done)*\s*;?\s*")


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _blocks(path: Path) -> list[tuple[str, int, list[tuple[int, str]]]]:
    """(language, fence line, [(line number, text)]) of every fenced block."""
    blocks, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fence = _FENCE.match(line)
        if current is None:
            if fence:
                current = (fence.group(2).lower(), number, [], fence.group(1))
        elif fence and line.strip() == fence.group(1) and fence.group(1).startswith(current[3]):
            blocks.append(current[:3])
            current = None
        else:
            current[2].append((number, line))
    return blocks


class ExtractionError(ValueError):
    pass


def _bash_commands(file: str, block: int, lines: list[tuple[int, str]]) -> list[Command]:
    logical: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in lines:
        text = _strip_comment(raw).rstrip()
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text.strip()
            pending = None
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        if text.strip():
            logical.append((number, text.strip()))
    if pending is not None:
        raise ExtractionError(f"{file}:{pending[0]}: a continuation line ends the block")

    commands: list[Command] = []
    env: dict[str, str] = {}
    shell: dict[str, tuple[str, ...]] = {}
    loops: list[tuple[str, tuple[str, ...]]] = []
    for number, text in logical:
        if _LOOPS.fullmatch(text):
            loops.extend((var, tuple(values.split())) for var, values in _LOOP.findall(text))
            continue
        if _DONE.fullmatch(text):
            for _ in range(text.count("done")):
                if not loops:
                    raise ExtractionError(f"{file}:{number}: `done` without a loop")
                loops.pop()
            continue
        words = shlex.split(text)
        # (an assignment's value is one shell word, which may hold spaces in quotes: B="a=1 b=2")
        if words[0] == "export" or all(re.fullmatch(r"\w+=.*", w, re.S) for w in words):
            for word in words[1:] if words[0] == "export" else words:
                name, _, value = word.partition("=")
                if not re.fullmatch(r"\w+", name):
                    raise ExtractionError(f"{file}:{number}: cannot read the assignment {word!r}")
                if words[0] == "export":
                    env[name] = value
                else:
                    shell[name] = (value,)
            continue
        for index, part in enumerate(p.strip() for p in text.split(" && ")):
            if not PROGRAMS.match(_ENV_PREFIX.match(part).group(2)):
                raise ExtractionError(
                    f"{file}:{number}: a line of a bash block that is no command this test knows: {part!r} (commands "
                    f"start with python, hsvae-, pip or pytest; export, VAR=value, for/do and done set them up)"
                )
            variables = {**shell, **dict(loops)}
            commands.append(Command(file, number, index, block, part, tuple(env.items()), tuple(variables.items())))
    if loops:
        raise ExtractionError(f"{file}:{block}: a for loop without its `done`")
    return commands


def extract(file: str) -> list[Command]:
    """Every command of one Markdown file."""
    commands = []
    for language, start, lines in _blocks(REPO / file):
        if language in ("bash", "sh", "shell", "console"):
            commands.extend(_bash_commands(file, start, lines))
        elif language == "python":
            commands.append(Command(file, start + 1, 0, start, "<python block>\n" + "\n".join(t for _, t in lines)))
    return commands


def all_commands() -> list[Command]:
    return [command for file in DOCS for command in extract(file)]


def _matches(command: Command, file: str, pattern: str) -> bool:
    return file in ("*", command.file) and re.search(pattern, command.text) is not None


def treatment(command: Command) -> Treatment:
    found = [t for f, p, t in TREATMENTS if _matches(command, f, p)]
    return found[0] if found else Treatment()


def known_issue(command: Command) -> str | None:
    return next((reason for (f, p), reason in KNOWN_ISSUES.items() if _matches(command, f, p)), None)


# ------------------------------------------------------------------------------------------------ planning
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_PLACEHOLDER = re.compile(r"<[^<>\s]+(?: [^<>\s]+)*>|/\.\.\./")
_OVERRIDES = OverridesParser.create()


def expand(text: str, values: dict[str, str]) -> str:
    """``$name`` and ``${name}`` of the block's variables; any other ``$`` is an error."""

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise ExtractionError(f"unknown shell variable ${name} in {text!r}")
        return values[name]

    return _VAR.sub(sub, text)


def _key(token: str) -> str:
    return token.split("=", 1)[0].lstrip("+~")


def _is_override(token: str) -> bool:
    return "=" in token and not token.startswith("-")


def _parse(token: str):
    return _OVERRIDES.parse_override(_PLACEHOLDER.sub("PLACEHOLDER", token))


def _first(token: str) -> str:
    """A sweep override narrowed to its first value (other overrides unchanged)."""
    override = _parse(token)
    if not override.is_sweep_override():
        return token
    return f"{token.split('=', 1)[0]}={next(iter(override.sweep_string_iterator()))}"


def _sweep_size(token: str) -> int:
    override = _parse(token)
    return len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1


def _quote(token: str) -> str:
    """A token for bash, in double quotes when it holds single ones (easier to read than shlex's)."""
    if "'" in token and not re.search(r'["$`\\!]', token):
        return f'"{token}"'
    return shlex.quote(token)


def _replace_token(text: str, key: str, new: str) -> tuple[str, bool]:
    """Replace the override of ``key`` (with or without +/++) in the command text by ``new``."""
    pattern = re.compile(r"(?<=\s)\+{0,2}" + re.escape(key) + r"=(?:'[^']*'|\"[^\"]*\"|\S)+")
    text, count = pattern.subn(lambda _: _quote(new), text, count=1)
    return text, bool(count)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


_MISSING = object()


def _has(cfg: DictConfig, key: str) -> bool:
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False) is not _MISSING


@dataclass
class Plan:
    """What runs for one command: the bash script, its environment, and what it must write."""

    command: Command
    script: str  # the command line actually run (variables still as written, placeholders filled)
    tokens: list[str]  # that line, expanded and split (for the checks)
    multirun: bool = False
    jobs: int = 1
    task_name: str | None = None
    #: (override, why) this test added or changed: "narrow" (a sweep to its first value), "treatment" (TREATMENTS'
    #: narrow) or "reduce" (REDUCE)
    added: list[tuple[str, str]] = field(default_factory=list)


def _program_tokens(tokens: list[str]) -> list[str]:
    i = 0
    while i < len(tokens) and re.fullmatch(r"\w+=\S*", tokens[i]):
        i += 1
    return tokens[i:]


def plan(command: Command, narrow: tuple[str, ...] = (), reduce: bool = True, loop_values: dict | None = None) -> Plan:
    """The command as it will run: sweeps narrowed, size-reducing overrides applied (placeholders not filled)."""
    values = {**dict(command.env), **{name: (loop_values or {}).get(name, vals[0]) for name, vals in command.variables}}
    text = command.text
    kind = command.kind
    if kind == "python":
        return Plan(command, text, [])
    if kind not in ("train", "eval"):
        return Plan(command, text, shlex.split(expand(text, values)))
    tokens = _program_tokens(shlex.split(expand(text, values)))
    multirun = any(t in ("-m", "--multirun") for t in tokens)
    added: list[tuple[str, str]] = []

    def put(token: str, why: str) -> None:
        nonlocal text
        text, replaced = _replace_token(text, _key(token), token)
        if not replaced:
            text = f"{text} {_quote(token)}"
        added.append((token, why))

    overrides = [t for t in tokens if _is_override(t)]
    given = {_key(t): t for t in overrides}
    narrow_keys = {_key(t) for t in narrow}
    # command-line sweeps narrowed to their first value (unless TREATMENTS' narrow says otherwise)
    for key, token in given.items():
        if key not in narrow_keys and _first(token) != token:
            put(_first(token), "narrow")
    for token in narrow:
        put(token, "treatment")
    current = {_key(t): t for t in _program_tokens(shlex.split(expand(text, values))) if _is_override(t)}
    single = [_first(t) for t in current.values()]
    cfg = compose_config("train" if kind == "train" else "eval", [_PLACEHOLDER.sub("PLACEHOLDER", t) for t in single])
    sweeper = OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or ""
    basic = sweeper.endswith("BasicSweeper")
    if multirun and basic:
        # the config's own sweep (an experiment's hydra.sweeper.params), narrowed where the command does not say
        for key, value in (OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}).items():
            if key not in current and key not in narrow_keys and _sweep_size(f"{key}={value}") > 1:
                put(_first(f"{key}={value}"), "narrow")
    if reduce:
        for key, value, needs in REDUCE[kind]:
            bare = key.lstrip("+")
            if not _has(cfg, needs) or (key.startswith("hydra.sweeper") and not multirun) or bare in narrow_keys:
                continue
            if not key.startswith("+") and not _has(cfg, bare):
                continue
            mine = current.get(bare)
            if mine is not None:
                try:
                    theirs = float(mine.split("=", 1)[1])
                except ValueError:
                    continue  # a non-numeric value (null, an interpolation): theirs
                if theirs <= value:
                    continue
                put(f"{mine.split('=', 1)[0]}={value}", "reduce")
            else:
                put(f"{key}={value}", "reduce")
        for key, extra in REDUCE_APPEND.items():
            if _has(cfg, key) and key not in current:
                items = list(OmegaConf.to_container(OmegaConf.select(cfg, key)))
                items += [e for e in extra if e not in items]
                put(f"{key}=[" + ",".join(f"'{item}'" for item in items) + "]", "reduce")
    final = _program_tokens(shlex.split(expand(text, values)))
    jobs = 1
    if multirun:
        if basic:
            jobs = math.prod(_sweep_size(t) for t in final if _is_override(t))
        else:
            trials = {_key(t): t for t in final if _is_override(t)}.get("hydra.sweeper.n_trials")
            jobs = int(trials.split("=", 1)[1]) if trials else int(OmegaConf.select(cfg, "hydra.sweeper.n_trials"))
    return Plan(command, text, final, multirun, jobs, str(cfg.task_name), added)


# ------------------------------------------------------------------------------------------------ running
@dataclass
class Outcome:
    command: Command
    script: str
    workdir: Path
    returncode: int = 0
    output: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.problems

    def report(self) -> str:
        head = f"{self.command.id}: {self.command.text}\nran: {self.script}\nin: {self.workdir}\n"
        status = f"exit status {self.returncode} after {self.seconds:.0f} s\n"
        status += "".join(f"- {problem}\n" for problem in self.problems)
        return head + status + "output (tail):\n" + self.output[-4000:]


def _copy_repo(dest: Path) -> None:
    """The repository's files as a fresh clone has them (tracked, and untracked but not ignored: new docs)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "logs", ".cache", "data", "outputs", "multirun", "wandb", "__pycache__", ".pytest_cache"}
        listed = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                  if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)]
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _newest(paths: list[str], workdir: Path) -> Path | None:
    paths = [Path(p) for p in paths]
    if not paths:
        return None
    return max(paths, key=lambda p: (p.stat().st_mtime, str(p))).relative_to(workdir)


class Sandbox:
    """Working directories (one per Markdown block) and the commands this process has run in them."""

    def __init__(self, root: Path, data_dir: Path):
        self.root, self.data_dir = root, data_dir
        self.workdirs: dict[tuple[str, int], Path] = {}
        self.done: dict[tuple[Path, str, tuple], Outcome] = {}
        self.commands = COMMANDS

    def workdir(self, command: Command) -> Path:
        key = (command.file, command.block)
        if key not in self.workdirs:
            name = re.sub(r"\W+", "_", f"{command.file}_{command.block}").strip("_")
            path = self.root / name
            _copy_repo(path)
            self.workdirs[key] = path
        return self.workdirs[key]

    def env(self, command: Command) -> dict[str, str]:
        env = {**os.environ, **dict(command.env)}
        # the data path: the block's export HSVAE_DATA_DIR=../shared/data is CI's layout relative to a clone
        env["HSVAE_DATA_DIR"] = str(self.data_dir)
        # never upload, never ask; `python` and the console scripts are this interpreter's
        env.update(WANDB_MODE="offline", WANDB_SILENT="true", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, command: Command) -> Outcome:
        """Run ``command`` in its block's working directory, after the block's earlier commands."""
        workdir = self.workdir(command)
        for earlier in self.commands:
            if (earlier.file, earlier.block) == (command.file, command.block) and (earlier.line, earlier.index) < (
                    command.line, command.index):
                if treatment(earlier).mode != "skip":
                    self._run_once(earlier, workdir)
        return self._run_once(command, workdir)

    def failed_before(self, outcome: Outcome) -> str:
        """The commands that failed in the same working directory before ``outcome``'s (their failure may be its)."""
        failed = []
        for other in self.done.values():
            if other is outcome:
                break
            if other.workdir == outcome.workdir and not other.ok:
                failed.append(f"\n--- an earlier command in this working directory failed:\n{other.report()[-3000:]}")
        return "".join(failed)

    def _run_once(self, command: Command, workdir: Path, narrow: tuple[str, ...] = ()) -> Outcome:
        key = (workdir, command.id + command.text, narrow)
        if key not in self.done:
            self.done[key] = self._execute(command, workdir, narrow)
        return self.done[key]

    def _execute(self, command: Command, workdir: Path, narrow: tuple[str, ...]) -> Outcome:
        todo = treatment(command)
        for file, pattern, before_narrow in todo.before:
            if file is None:
                literal = Command(command.file, command.line, 0, command.block, pattern, command.env, command.variables)
                self._run_once(literal, workdir, before_narrow)
                continue
            match = [c for c in self.commands if _matches(c, file, pattern)]
            assert len(match) == 1, f"{command.id}: `before` {file} {pattern!r} matches {len(match)} commands"
            self._run_once(match[0], workdir, before_narrow)
        if todo.setup:
            setup = self._bash(command, todo.setup, workdir, {})
            if setup.returncode != 0:
                setup.problems.append("its setup (TREATMENTS' setup) failed")
                return setup
        if todo.mode == "skip":
            return Outcome(command, "(skipped)", workdir)
        if todo.mode == "compose":
            outcome = self._compose(command, workdir)
            if outcome.ok and todo.stand_in_without:
                text = command.text
                for token in todo.stand_in_without:
                    text = re.sub(r"\s+" + re.escape(token) + r"(?=\s|$)", "", text)
                stand_in = Command(command.file, command.line, command.index, command.block, text, command.env,
                                   command.variables)
                ran = self._execute(stand_in, workdir, narrow or todo.narrow)
                ran.script = f"(composed; then on the CPU:) {ran.script}"
                return ran
            return outcome
        return self._run_plan(plan(command, narrow or todo.narrow), workdir, todo)

    def _bash(self, command: Command, script: str, workdir: Path, shell: dict[str, str]) -> Outcome:
        """``script`` in bash, after the block's shell and loop variables (its exports are in the environment)."""
        lines = [f"{name}={shlex.quote(value)}" for name, value in shell.items()]
        started = time.time()
        try:
            proc = subprocess.run(["bash", "-c", "\n".join([*lines, script])], cwd=workdir, env=self.env(command),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
            outcome = Outcome(command, script, workdir, proc.returncode, proc.stdout, time.time() - started)
        except subprocess.TimeoutExpired as err:
            output = err.output.decode(errors="replace") if isinstance(err.output, bytes) else (err.output or "")
            outcome = Outcome(command, script, workdir, -1, output, TIMEOUT, [f"timed out after {TIMEOUT} s"])
        # one line per command run, for reading a CI log's working directories afterwards
        with open(self.root / "commands.log", "a") as log:
            log.write(f"{command.id}\t{workdir.name}\texit {outcome.returncode}\t{outcome.seconds:.0f} s\t"
                      f"{script.splitlines()[0]}\n")
        return outcome

    def _compose(self, command: Command, workdir: Path) -> Outcome:
        shell = {name: vals[0] for name, vals in command.variables}
        values = {**dict(command.env), **shell}
        if command.kind in ("train", "eval"):
            text = command.text
            for token in _program_tokens(shlex.split(expand(text, values))):
                if token in ("-m", "--multirun"):
                    text = re.sub(r"(?<=\s)" + re.escape(token) + r"(?=\s|$)", "", text, count=1)
                elif _is_override(token) and _first(token) != token:
                    text, _ = _replace_token(text, _key(token), _first(token))
            return self._bash(command, f"{text} --cfg all --resolve", workdir, shell)
        # a script: every --option it uses must be one of its own
        program = _program_tokens(shlex.split(expand(command.text, values)))
        script = program[:1] if program[0].startswith("hsvae-") else program[:2]
        outcome = self._bash(command, f"{shlex.join(script)} --help", workdir, shell)
        options = {t.split("=", 1)[0] for t in program if t.startswith("--")}
        unknown = sorted(o for o in options if o not in outcome.output)
        outcome.problems += [f"{option} is not an option of {script[-1]}" for option in unknown]
        return outcome

    def _fill(self, text: str, workdir: Path, fill: dict[str, str]) -> tuple[str, list[str]]:
        problems = []
        for path in sorted({m for m in re.findall(r"[^\s=]*(?:<[^<>]+>|/\.\.\./)[^\s]*", text)}, key=len, reverse=True):
            pattern = fill.get(path) or _PLACEHOLDER.sub(lambda m: "/**/" if m.group(0) == "/.../" else "*", path)
            found = _newest(glob.glob(str(workdir / pattern), recursive=True), workdir)
            if found is None:
                problems.append(f"nothing in the working directory fills the placeholder of {path} ({pattern})")
            else:
                text = text.replace(path, str(found))
        return text, problems

    def _run_plan(self, planned: Plan, workdir: Path, todo: Treatment) -> Outcome:
        command = planned.command
        shell = {name: vals[0] for name, vals in command.variables}
        values = {**dict(command.env), **shell}
        if command.kind == "python":
            source = command.text.split("\n", 1)[1]
            return self._bash(command, f"python - <<'README_PYTHON_BLOCK'\n{source}\nREADME_PYTHON_BLOCK", workdir, {})
        script, problems = self._fill(planned.script, workdir, dict(todo.fill))
        if problems:
            return Outcome(command, script, workdir, -1, "", 0.0, problems)
        started = time.time() - 1
        outcome = self._bash(command, script, workdir, shell)
        if outcome.returncode != 0:
            return outcome
        tokens = _program_tokens(shlex.split(expand(script, values)))
        overrides = {_key(t): t.split("=", 1)[1] for t in tokens if _is_override(t)}
        if command.kind in ("train", "eval"):
            outcome.problems += self._check_runs(planned, overrides, workdir, started)
        out = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--out"), None)
        if out is not None and not ((workdir / out).is_file() and (workdir / out).stat().st_mtime >= started):
            outcome.problems.append(f"--out {out} was not written")
        return outcome

    def _check_runs(self, planned: Plan, overrides: dict[str, str], workdir: Path, started: float) -> list[str]:
        """The run's results.json (every job's, for -m), written by this command."""

        def fresh(path: Path) -> bool:
            return path.is_file() and path.stat().st_mtime >= started

        # a stack (seeds=[...]) writes one run per seed, into <output dir>/seed_<s>/
        seeds = overrides.get("seeds")
        members = [f"seed_{s.strip()}/" for s in seeds.strip("[]").split(",")] if seeds else [""]

        def written(run_dir: Path) -> bool:
            return all(fresh(run_dir / member / "results.json") for member in members)

        if planned.multirun:
            sweep = overrides.get("hydra.sweep.dir")
            if sweep is None and overrides.get("sweep") == "campaign":
                # a table's campaign: into experiments/<task>/runs/, one folder per job named by its overrides
                sweep = f"experiments/{planned.task_name}/runs"
                done = [p for p in (workdir / sweep).glob("*") if p.is_dir() and written(p)]
                return [] if len(done) >= planned.jobs else [
                    f"{sweep}: {len(done)} jobs wrote {members[0]}results.json (expected {planned.jobs})"]
            if sweep is None:
                dirs = [p for p in (workdir / "logs" / planned.task_name / "multiruns").glob("*")
                        if p.is_dir() and p.stat().st_mtime >= started]
                if not dirs:
                    return [f"no new sweep directory under logs/{planned.task_name}/multiruns/"]
                sweep = str(max(dirs).relative_to(workdir))
            missing = [n for n in range(planned.jobs) if not written(workdir / sweep / str(n))]
            return [f"{sweep}/{n}/{members[0]}results.json was not written (expected {planned.jobs} jobs)"
                    for n in missing]
        run_dir = overrides.get("hydra.run.dir")
        if run_dir is not None:
            return [] if written(workdir / run_dir) else [f"{run_dir}/{members[0]}results.json was not written"]
        # a new run directory, or (resuming) the one the checkpoint came from
        if not any(written(p) for p in (workdir / "logs" / planned.task_name / "runs").glob("*")):
            return [f"no {members[0]}results.json written under logs/{planned.task_name}/runs/"]
        return []


# ------------------------------------------------------------------------------------------------ tests
try:
    COMMANDS = all_commands()
    EXTRACTION_ERROR: ExtractionError | None = None
except ExtractionError as error:  # reported by test_extraction_finds_the_commands, not at collection
    COMMANDS, EXTRACTION_ERROR = [], error


def _param(command: Command):
    reason = known_issue(command)
    marks = [pytest.mark.xfail(strict=False, reason=reason)] if reason else []
    return pytest.param(command, id=command.id, marks=marks)


def xdist_scope(nodeid: str) -> str | None:
    """The Markdown block of a ``test_readme_command`` test (None for any other test): tests/conftest.py's
    scheduler sends a block's tests to one pytest-xdist worker, which runs them in order in one working
    directory (xdist's own ``--dist loadgroup`` would, but its marks have no effect under pytest 9)."""
    match = re.search(r"::test_readme_command\[(.+)\]$", nodeid)
    if match is None:
        return None
    block = _BLOCK_OF.get(match.group(1))
    return f"readme:{block}" if block else None


_BLOCK_OF = {c.id: f"{c.file}:{c.block}" for c in COMMANDS}


def test_extraction_finds_the_commands():
    """README.md has its commands, and every experiment README with a bash block has its commands found."""
    if EXTRACTION_ERROR is not None:
        pytest.fail(str(EXTRACTION_ERROR))
    by_file = {file: [c for c in COMMANDS if c.file == file] for file in DOCS}
    readme = by_file["README.md"]
    assert len(readme) >= 20, [c.text for c in readme]
    for expected in ("python train.py", "python train.py -m experiment=synthetic_sphere",
                     "python eval.py ckpt_path=logs/train/runs/<run>/checkpoints/best.ckpt",
                     "python scripts/summarize_search.py logs/search_synthetic/multiruns/<date>"):
        assert expected in [c.text for c in readme], expected
    # continuations are joined: make_tables' --paper/--out are on the line after its start
    tables = [c for c in readme if "make_tables.py logs/mnist_table" in c.text]
    assert tables and "--out experiments/mnist_table/table.md --plot latent.dim" in tables[0].text
    for file in DOCS[1:]:
        bash_blocks = [b for b in _blocks(REPO / file) if b[0] in ("bash", "sh", "shell", "console")]
        found = {c.block for c in by_file[file]}
        for language, start, lines in bash_blocks:
            if any(PROGRAMS.match(_ENV_PREFIX.match(_strip_comment(t).strip()).group(2)) for _, t in lines):
                assert start in found, f"{file}:{start}: a bash block whose commands were not extracted"
    # loops and variables are read: the loop body sees its variable, the exported data path is recorded
    smiles = [c for c in COMMANDS if c.file == "experiments/smiles/README.md" and "variant=$v" in c.text]
    assert smiles and dict(smiles[0].variables)["v"] == ("spcauchy128", "gaussian64", "gaussian128")
    assert dict(smiles[0].env)["HSVAE_DATA_DIR"] == "../shared/data"


def test_extraction_rejects_unknown_lines():
    with pytest.raises(ExtractionError, match="no command this test knows"):
        _bash_commands("x.md", 1, [(2, "wandb sync run")])
    with pytest.raises(ExtractionError, match="without its `done`"):
        _bash_commands("x.md", 1, [(2, "for a in 1 2; do"), (3, "python train.py seed=$a")])
    commands = _bash_commands("x.md", 1, [(2, "export A=1"), (3, "R=x  # a comment"),
                                          (4, "OMP_NUM_THREADS=1 python train.py \\"), (5, "  seed=$R  # c"),
                                          (6, "pip install -e . && python train.py")])
    assert [c.text for c in commands] == ["OMP_NUM_THREADS=1 python train.py seed=$R", "pip install -e .",
                                          "python train.py"]
    assert commands[0].env == (("A", "1"),) and commands[0].variables == (("R", ("x",)),)
    assert [c.id for c in commands[1:]] == ["x.md:6", "x.md:6#2"]


def test_manifest_matches_commands():
    """Every exemption and known issue names a command that exists; no command matches two treatments; every
    command that cannot run on a CI machine is exempted (so an untested command is a deliberate choice)."""
    for file, pattern, _ in TREATMENTS:
        assert any(_matches(c, file, pattern) for c in COMMANDS), f"TREATMENTS entry matches no command: {pattern!r}"
    for file, pattern in KNOWN_ISSUES:
        assert any(_matches(c, file, pattern) for c in COMMANDS), f"KNOWN_ISSUES entry matches no command: {pattern!r}"
    for command in COMMANDS:
        matching = [(f, p) for f, p, _ in TREATMENTS if _matches(command, f, p)]
        assert len(matching) <= 1, f"{command.id} matches several TREATMENTS entries: {matching}"
        mode = treatment(command).mode
        assert mode in ("run", "compose", "skip"), (command.id, mode)
        for pattern, why in CANNOT_RUN_HERE:
            if re.search(pattern, command.program):
                assert mode != "run", f"{command.id} {why}: give it a treatment in TREATMENTS ({command.text})"
        if mode == "compose":
            assert command.kind in ("train", "eval", "script"), command.id
        if mode != "run":
            assert treatment(command).reason, f"{command.id}: an exemption needs its reason"


@pytest.mark.slow  # (~11 s; the slow tier runs every command too, which composes them)
def test_every_hydra_command_composes_with_its_overrides():
    """Planning every train/eval command composes it (so a wrong override in the docs fails here, fast), narrows
    its sweeps, and adds only the size-reducing overrides of REDUCE / TREATMENTS."""
    allowed = {k.lstrip("+") for kind in REDUCE.values() for k, _, _ in kind} | set(REDUCE_APPEND)
    for command in COMMANDS:
        todo = treatment(command)
        if command.kind not in ("train", "eval") or todo.mode == "skip":
            continue
        planned = plan(command, todo.narrow)
        if planned.multirun:
            assert planned.jobs <= 3, (command.id, planned.jobs, planned.script)
        for token, why in planned.added:
            key = _key(token)
            assert not key.startswith(("hydra.run.", "hydra.sweep.dir")), (command.id, token)
            if why == "reduce":
                assert key in allowed, (command.id, token)
            elif why == "narrow":
                assert not _parse(token).is_sweep_override(), (command.id, token)


def test_plan_narrows_and_reduces():
    command = Command("x.md", 1, 0, 1, "python train.py -m experiment=mnist_table latent=gaussian,vmf "
                                       "trainer.max_epochs=10 hydra.sweep.dir=logs/x")
    planned = plan(command)
    assert "latent=gaussian " in planned.script and "vmf" not in planned.script
    assert "latent.dim=2" in planned.script and "seed=0" in planned.script  # the experiment's own sweep
    assert "trainer.max_epochs=1 " in planned.script and "+trainer.limit_train_batches=2" in planned.script
    assert "evaluation.ll.samples=2" in planned.script and planned.jobs == 1 and planned.task_name == "mnist_table"
    # a README value below ours is kept; a sweep kept by narrow counts its jobs
    planned = plan(Command("x.md", 1, 0, 1, "python train.py dataset=mnist evaluation.ll.samples=1"))
    assert "evaluation.ll.samples=1" in planned.script and "evaluation.ll.samples=2" not in planned.script
    planned = plan(command, ("latent.dim=2,5,10",))
    assert planned.jobs == 3 and "latent.dim=2,5,10" in planned.script
    # an M1 trained inside an M1+M2 job gets one epoch too
    planned = plan(Command("x.md", 1, 0, 1, "python train.py experiment=semisupervised_table"))
    assert "\"m1.overrides=['evaluation=[m1]','trainer.max_epochs=1']\"" \
        in planned.script


@pytest.fixture(scope="session")
def readme_sandbox(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("readme")
    sandbox = Sandbox(root, data_dir)
    yield sandbox
    # keep the working directories of failed commands for inspection
    failed = {o.workdir for o in sandbox.done.values() if not o.ok}
    for workdir in set(sandbox.workdirs.values()) - failed:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command(command: Command, readme_sandbox: Sandbox):
    todo = treatment(command)
    if todo.mode == "skip":
        pytest.skip(f"{command.text}: {todo.reason}")
    outcome = readme_sandbox.run(command)
    assert outcome.ok, outcome.report() + readme_sandbox.failed_before(outcome)
