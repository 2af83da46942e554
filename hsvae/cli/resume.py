"""Resume is one command: ``python train.py ckpt_path=<run>/checkpoints/last.ckpt``.

Before Hydra composes anything, :func:`resume_arguments` rewrites such a command line into the run's own
overrides (``<run>/.hydra/overrides.yaml``) followed by the new ones (which win, key by key) and
``hydra.run.dir=<run>``: the config is composed exactly as the interrupted run's was, and the run continues
in its own directory. A checkpoint outside a run directory (moved, or another project's) is used with the
config of the command line, as given.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MULTIRUN_FLAGS = ("-m", "--multirun")


def run_dir_of(ckpt: str | Path) -> Path:
    """The run directory of a checkpoint written by train.py (``<run dir>/checkpoints/<name>.ckpt``)."""
    return Path(ckpt).resolve().parent.parent


def override_key(override: str) -> str:
    """An override's key, without ``+``/``~``."""
    return override.partition("=")[0].lstrip("+~")


def _value(override: str) -> str:
    """An override's value as Hydra reads it: ``ckpt_path='/runs/run é 1/last.ckpt'`` -> the path, unquoted."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 -- not Hydra's grammar: Hydra names the problem when it composes
        return override.partition("=")[2]
    return value if isinstance(value, str) else override.partition("=")[2]


def hydra_quoted(value: str) -> str:
    """``value`` as one quoted Hydra value (spaces, non-ASCII letters, quotes and backslashes kept)."""
    return "'" + value.replace("'", "\\'") + "'"


def resume_arguments(argv: list[str]) -> list[str]:
    """``argv`` (without the program name), rewritten for a resume by ``ckpt_path=`` alone."""
    if any(arg in MULTIRUN_FLAGS for arg in argv):
        return argv  # each job of a sweep resumes its own last.ckpt (auto_resume)
    flags = [a for a in argv if a.startswith("-")]
    overrides = [a for a in argv if not a.startswith("-")]
    ckpt = next((_value(o) for o in overrides if override_key(o) == "ckpt_path" and "=" in o), None)
    if not ckpt or ckpt == "null":
        return argv
    run_dir = run_dir_of(ckpt)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not Path(ckpt).is_file() or not saved.is_file():
        return argv  # train.py names a missing checkpoint; a checkpoint without its run uses this command's config
    try:
        original = [str(o) for o in (yaml.safe_load(saved.read_text()) or [])]
    except (OSError, yaml.YAMLError):
        return argv
    merged = {override_key(o): o for o in original if override_key(o) not in ("ckpt_path", "allow_overwrite")}
    for override in overrides:
        key = override_key(override)
        previous = merged.get(key)
        if previous is not None and previous.startswith("+") and not override.startswith(("+", "~")):
            override = "+" + override  # the run added this key; the new value replaces it
        merged[key] = override
    if "hydra.run.dir" not in merged:
        merged["hydra.run.dir"] = f"hydra.run.dir={hydra_quoted(str(run_dir))}"
    return flags + list(merged.values())

