"""Checkpoints and the runs that wrote them: find a run's config, load a checkpoint, check that it fits a model.

One lookup order everywhere (train.py's resume, eval.py, the M1 of M1+M2, the interpolation tool): an explicit
config file if one is given, else ``<run dir>/.hydra/config.yaml``, else the config in ``<run dir>/results.json``,
the run dir being the checkpoint folder's parent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from hsvae.utils.errors import CheckpointError, ConfigError
from hsvae.cli.resume import run_dir_of


def find_run_config(ckpt: str | Path, explicit: str | Path | None = None,
                    explicit_key: str = "train_config") -> tuple[DictConfig, Path]:
    """The training config of the run that wrote ``ckpt``, and the file it was read from."""
    if explicit:
        candidates = [Path(explicit)]
        if not candidates[0].is_file():
            raise ConfigError(f"{explicit_key}={explicit} does not exist (expected a run's .hydra/config.yaml "
                              "or results.json)")
    else:
        run_dir = run_dir_of(ckpt)
        candidates = [run_dir / ".hydra" / "config.yaml", run_dir / "results.json"]
    for source in candidates:
        if not source.is_file():
            continue
        try:
            if source.suffix == ".json":
                config = json.loads(source.read_text()).get("config")
                if not config:
                    continue  # a failed run's record may hold no config
                return OmegaConf.create(config), source
            return OmegaConf.load(source), source
        except (OSError, ValueError, AttributeError) as err:
            raise ConfigError(f"{source} is unreadable ({type(err).__name__}: {err}); pass "
                              f"{explicit_key}=<the run's .hydra/config.yaml>") from err
    raise ConfigError(f"cannot find the training config of {ckpt}: looked for "
                      f"{' and '.join(map(str, candidates))}. Pass {explicit_key}=<that run's .hydra/config.yaml>.")


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """A Lightning checkpoint as a dict (on the CPU, its tensors memory-mapped: checking it against a model reads
    their shapes, not their bytes, before Lightning loads the file); a missing or foreign file is named, with the
    fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={path} does not exist (expected a .ckpt file written by train.py, "
                          "e.g. <run dir>/checkpoints/last.ckpt)")
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # (files of torch's legacy format cannot be mapped)
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 -- pickle, zip and torch errors all mean "not a checkpoint"
        raise CheckpointError(f"{key}={path} is not a readable checkpoint ({type(err).__name__}); pass a .ckpt "
                              "file written by train.py (<run dir>/checkpoints/last.ckpt or best.ckpt)") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{key}={path} is a torch file but not a Lightning checkpoint (no state_dict); pass "
                              "a .ckpt file written by train.py")
    return ckpt


def check_fits(model: torch.nn.Module, ckpt: dict[str, Any], path: str | Path, hint: str = "") -> None:
    """Refuse a checkpoint whose parameters do not match the model the config builds, naming the first
    differing parameter."""
    have = model.state_dict()
    saved = ckpt["state_dict"]
    problems = [f"{name} is {tuple(saved[name].shape)} in the checkpoint but {tuple(have[name].shape)} here"
                for name in saved if name in have and tuple(saved[name].shape) != tuple(have[name].shape)]
    problems += [f"{name} is in the checkpoint but not in this model" for name in saved if name not in have]
    problems += [f"{name} is missing from the checkpoint" for name in have if name not in saved]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{path} does not fit the model this config builds: {problems[0]}{more}. "
                              f"{hint or 'Use the config of the run that wrote it.'}")
