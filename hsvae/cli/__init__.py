"""Hydra entry points: the only layer that knows about configs."""

from pathlib import Path

#: The repository's ``conf/`` directory (the package is installed editable from the repository).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# The configs' own resolvers (e.g. ${hsvae.if_le:...}): registered before any config is resolved.
from hsvae.cli import resolvers as _resolvers  # noqa: E402,F401
