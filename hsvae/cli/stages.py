"""What a task runs before its data exist, and the data module built from it.

An M1+M2 task (``task=m1_m2``, which declares ``m1``) has two stages. Stage 1 is the M1 VAE: loaded from
``m1.ckpt_path``, or trained first as a complete run of its own into ``<output_dir>/m1/`` (see
:func:`hsvae.cli.m1.m1_vae`). Stage 2 is this run: the M2, trained on the M1's codes, whose data module receives
the M1 here. The dataset config describes the data alone; no stage runs inside data construction.
"""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from hsvae.cli.builders import instantiate_node
from hsvae.utils.errors import ConfigError


def earlier_stages(cfg: DictConfig) -> dict[str, object]:
    """The data module's arguments that earlier stages produce: ``{"m1": <the M1 VAE>}`` for an M1+M2 task,
    else nothing."""
    if cfg.get("m1") is None:
        return {}
    from hsvae.cli.m1 import m1_vae  # the M1 stage trains with train(), which imports this module

    m1 = cfg.m1
    return {"m1": m1_vae(
        latent=m1.latent, ckpt_path=m1.get("ckpt_path"), train_config=m1.get("train_config"),
        overrides=list(m1.get("overrides") or ()), output_dir=f"{cfg.paths.output_dir}/m1", paths=cfg.paths,
        trainer=cfg.trainer, progress_bar=OmegaConf.select(cfg, "callbacks.progress_bar", default=None),
        seed=cfg.seed, task_name=cfg.task_name,
    )}


def instantiate_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """``cfg.dataset``, given what the task's earlier stages produced; ``data_spec.input_dim`` is then read from
    it (see :func:`read_input_dim`)."""
    datamodule = instantiate_node(cfg, "dataset", **earlier_stages(cfg))
    read_input_dim(cfg, datamodule)
    return datamodule


def read_input_dim(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """Set ``data_spec.input_dim`` (what the model's input and output layers are built for) from the data module's
    ``input_dim`` (the size of a data point; a graph's node features) when the config leaves it unset; an explicit
    value must agree."""
    size = getattr(datamodule, "input_dim", None)
    if OmegaConf.select(cfg, "data_spec") is None or size is None:
        return
    if OmegaConf.is_missing(cfg.data_spec, "input_dim"):
        with open_dict(cfg):
            cfg.data_spec.input_dim = int(size)
    elif cfg.data_spec.input_dim != size:
        raise ConfigError(
            f"data_spec.input_dim={cfg.data_spec.input_dim}, but {type(datamodule).__name__} gives points of size "
            f"{size}: drop the override (the size is read from the data)")
