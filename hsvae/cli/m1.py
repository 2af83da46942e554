"""The M1 of an M1+M2 run: a trained MNIST VAE, loaded from its checkpoint or trained first in the same job.

Stage 1 of ``task=m1_m2`` (``dataset=mnist_m1``): train.py runs it as a step before the run's data are built
(:func:`m1_stage_config`, when :func:`m1_checkpoint` finds no M1), and :func:`hsvae.cli.stages.instantiate_datamodule`
hands the M1 (:func:`trained_m1`) to the data module:

* ``m1.ckpt_path=<run>/checkpoints/best.ckpt``: that VAE, rebuilt from its run's config
  (``<run>/.hydra/config.yaml``, else ``<run>/results.json``, or ``m1.train_config``) and checked against the
  latent the config expects (``m1.latent``: family and dimension);
* ``m1.ckpt_path=null``: an M1 is trained first, into ``<output_dir>/m1/`` (a complete train.py run of
  ``dataset=mnist`` with ``m1.latent``, ``m1.overrides`` and this job's seed and hardware settings, writing its
  own results.json, with the M1 k-NN accuracies), then used. A rerun or resumed job finds it there and reuses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from hsvae.cli import CONFIG_DIR
from hsvae.cli.instantiation import targets
from hsvae.utils.errors import ConfigError
from hsvae.cli.checkpoints import find_run_config
from hsvae.models import VAE
from hsvae.training import VAEModule

log = logging.getLogger(__name__)

#: Trainer settings that belong to the M2's training, not copied to the M1's (which keeps its protocol's).
M2_ONLY_TRAINER_KEYS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "default_root_dir")
#: Overrides that m1.latent decides, refused in m1.overrides.
LATENT_KEYS = ("latent", "latent.dim")


def _describe(latent) -> str:
    return f"{type(latent).__name__}(dim={latent.dim})"


def _expected(latent: DictConfig):
    try:
        return hydra.utils.instantiate(latent)
    except Exception as err:
        raise ConfigError(f"m1.latent is not a valid latent config ({type(err).__name__}: {err}): {latent}") from err


def load_m1(ckpt_path: str | Path, latent: DictConfig, train_config: str | None = None) -> VAE:
    """The VAE saved in ``ckpt_path`` (frozen, eval mode, on the CPU), after checking that its latent is the
    one ``latent`` (the ``m1.latent`` config) describes."""
    expected = _expected(latent)
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"m1.ckpt_path={ckpt} does not exist: expected the checkpoint of an M1 VAE with latent "
            f"{_describe(expected)} (m1.latent), written by train.py (e.g. <run dir>/checkpoints/best.ckpt). "
            "Set m1.ckpt_path=null to train the M1 in this job."
        )
    cfg, source = find_run_config(ckpt, train_config, explicit_key="m1.train_config")
    target = str(OmegaConf.select(cfg, "model._target_", default=""))
    if not targets(cfg.get("model"), VAEModule):
        raise ConfigError(
            f"m1.ckpt_path={ckpt} is not a VAE checkpoint: its run ({source}) trained model._target_={target or None}"
        )
    try:
        module = hydra.utils.instantiate(cfg.model)
    except Exception as err:
        raise ConfigError(f"cannot rebuild the M1 VAE of {ckpt} from {source}: {type(err).__name__}: {err}") from err
    actual = module.net.latent
    if type(actual) is not type(expected) or actual.dim != expected.dim:
        raise ConfigError(
            f"the M1 checkpoint {ckpt} has latent {_describe(actual)} (from {source}), but the config says "
            f"m1.latent is {_describe(expected)}. Point m1.ckpt_path at an M1 with that latent, or set m1.latent "
            f"(latent@m1.latent=<family>, m1.latent.dim=<d>) to match the checkpoint."
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        module.load_state_dict(state["state_dict"])
    except Exception as err:
        raise ConfigError(f"cannot load the M1 weights from {ckpt}: {type(err).__name__}: {err}") from err
    return module.net.eval().requires_grad_(False)


def _compose_train(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside train.py's Hydra app
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class FinalCheckpoint(pl.Callback):
    """Saves the model at the end of fit (for fast_dev_run, where ModelCheckpoint writes nothing)."""

    def __init__(self, path: str):
        self.path = path

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


def m1_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint of an M1+M2 run's M1 (``cfg.m1``): ``m1.ckpt_path``, or the M1 this run trained earlier into
    ``<output_dir>/m1/`` (a finished run there: its results.json), or None when it has still to be trained."""
    if cfg.m1.get("ckpt_path"):
        return Path(cfg.m1.ckpt_path)
    m1_dir = Path(cfg.paths.output_dir) / "m1"
    if not (m1_dir / "results.json").is_file():
        return None
    return next((p for p in (m1_dir / "checkpoints" / n for n in ("best.ckpt", "final.ckpt")) if p.is_file()), None)


def m1_refusal(cfg: DictConfig) -> str | None:
    """Why this job cannot train its M1 itself (an evaluation, a DDP run), or None."""
    if cfg.task_name == "eval":
        return ("evaluating an M1+M2 checkpoint needs its M1: the training run trained it into <its run dir>/m1; "
                "pass a train_config whose m1.ckpt_path points at <its run dir>/m1/checkpoints/best.ckpt")
    strategy = str((cfg.get("trainer") or {}).get("strategy", "auto"))
    if "ddp" in strategy:
        return (f"training the M1 inside an M1+M2 job is not supported under trainer.strategy={strategy}: train "
                "the M1 first (python train.py dataset=mnist ...) and pass m1.ckpt_path")
    return None


def m1_stage_config(cfg: DictConfig) -> DictConfig:
    """The train.py config that trains an M1+M2 run's M1 into ``<output_dir>/m1/`` (stage 1: run by the pipeline
    before this run's data are built, when :func:`m1_checkpoint` finds none): ``dataset=mnist`` and
    ``m1.overrides``, with ``m1.latent`` as its latent, this job's paths, seed and trainer settings (except the M2's
    epochs, and those that ``m1.overrides`` sets)."""
    refusal = m1_refusal(cfg)
    if refusal is not None:
        raise ConfigError(refusal)
    m1_dir = Path(cfg.paths.output_dir) / "m1"
    overrides = list(cfg.m1.get("overrides") or ())
    keys = [item.lstrip("+~").split("=")[0] for item in overrides]
    for item, key in zip(overrides, keys):
        if key in LATENT_KEYS:
            raise ConfigError(
                f"m1.overrides sets {item!r}: the M1 latent is m1.latent (latent@m1.latent=..., m1.latent.dim=...)"
            )
    try:
        stage = _compose_train(["dataset=mnist", *overrides])
    except Exception as err:
        raise ConfigError(f"m1.overrides={overrides} do not compose with train.py's config: {err}") from err
    with open_dict(stage):
        stage.latent = OmegaConf.create(OmegaConf.to_container(cfg.m1.latent))
        stage.seed = cfg.seed
        stage.task_name = "m1"
        # a rerun of this job continues an M1 that stopped part-way (its last.ckpt), or starts it again
        stage.auto_resume = True
        stage.paths = OmegaConf.merge(cfg.paths, {"output_dir": str(m1_dir)})
        for key, value in (cfg.trainer or {}).items():
            if key not in M2_ONLY_TRAINER_KEYS and f"trainer.{key}" not in keys:
                stage.trainer[key] = value
        stage.callbacks.progress_bar = OmegaConf.select(cfg, "callbacks.progress_bar", default=None)
        if stage.trainer.get("fast_dev_run"):
            # fast_dev_run writes no checkpoint; this callback keeps the (one-step) model for the M2
            stage.callbacks.m1_final_checkpoint = {"_target_": "hsvae.cli.m1.FinalCheckpoint",
                                                   "path": str(m1_dir / "checkpoints" / "final.ckpt")}
    log.info("M1: training %s on MNIST into %s", _describe(_expected(cfg.m1.latent)), m1_dir)
    return stage


def trained_m1(cfg: DictConfig) -> VAE:
    """The M1 of an M1+M2 run, loaded from :func:`m1_checkpoint` (its stage has run: train.py trains it first)."""
    path = m1_checkpoint(cfg)
    if path is None:
        raise ConfigError(m1_refusal(cfg) or f"m1.ckpt_path is null and no M1 was trained into "
                          f"{cfg.paths.output_dir}/m1: train.py trains it there first, or pass m1.ckpt_path")
    log.info("M1: %s", path)
    return load_m1(path, cfg.m1.latent, cfg.m1.get("train_config"))
