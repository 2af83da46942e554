"""The data module, given what the task's earlier stages produced: an M1+M2 task's M1 (stage 1, loaded or trained
first by train.py: hsvae/cli/m1.py) is handed to the data of stage 2, the M2. The dataset config describes the data
alone; no stage runs inside data construction.
"""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from hsvae.cli.instantiation import instantiate_node
from hsvae.cli.m1 import trained_m1
from hsvae.data.base import SizedPoints
from hsvae.utils.errors import ConfigError


def instantiate_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """``cfg.dataset``, given what the task's earlier stages produced (an M1+M2 task's M1, as the data module's
    ``m1``); ``data_spec.input_dim`` is then read from it (see :func:`read_input_dim`)."""
    produced = {"m1": trained_m1(cfg)} if cfg.get("m1") is not None else {}
    datamodule = instantiate_node(cfg, "dataset", **produced)
    read_input_dim(cfg, datamodule)
    return datamodule


def read_input_dim(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Set ``data_spec.input_dim`` (what the model's input and output layers are built for) from the data module's
    ``input_dim`` (the size of a data point; a graph's node features) when the config leaves it unset; an explicit
    value must agree."""
    size = datamodule.input_dim if isinstance(datamodule, SizedPoints) else None
    if OmegaConf.select(cfg, "data_spec") is None or size is None:
        return
    if OmegaConf.is_missing(cfg.data_spec, "input_dim"):
        with open_dict(cfg):
            cfg.data_spec.input_dim = int(size)
    elif cfg.data_spec.input_dim != size:
        raise ConfigError(
            f"data_spec.input_dim={cfg.data_spec.input_dim}, but {type(datamodule).__name__} gives points of size "
            f"{size}: drop the override (the size is read from the data)")
