"""Hydra entry points: the only layer that knows about configs."""

from pathlib import Path

#: The repository's ``conf/`` directory (the package is installed editable from the repository).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
