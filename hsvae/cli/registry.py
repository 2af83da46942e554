"""The latent families by name. The ``latent`` config group is the one list: a family is added by its class
and one file, ``conf/latent/<name>.yaml``; tests, scripts and benchmarks read the names and build families from
those files (:func:`latent_families`, :func:`build_latent`) instead of keeping lists of their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

from hsvae.cli import CONFIG_DIR


def group_options(group: str) -> list[str]:
    """The options of a config group (the file names in ``conf/<group>/``), sorted."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def latent_families() -> list[str]:
    """The names of the latent families with a posterior and a prior (``latent=<name>``), sorted: every option
    of the group but a plain autoencoder's point code (a class with ``has_prior = False``)."""
    return [name for name in group_options("latent") if hydra.utils.get_class(_latent_config(name)._target_).has_prior]


def _latent_config(name: str):
    return OmegaConf.load(Path(CONFIG_DIR) / "latent" / f"{name}.yaml")


def build_latent(name: str, dim: int, **overrides: Any):
    """The latent family ``conf/latent/<name>.yaml`` describes, of intrinsic dimension ``dim``, with its other
    arguments from that file unless overridden (e.g. ``grad_correction=True``)."""
    options = group_options("latent")
    if name not in options:
        raise ValueError(f"unknown latent family {name!r}; the latent config group has {options}")
    return hydra.utils.instantiate(_latent_config(name), dim=dim, **overrides)
