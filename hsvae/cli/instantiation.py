"""Composed configs into objects: the checks of values that libraries would take and fail on late, and
``instantiate`` with a constructor's argument errors reported as the config keys a user sets."""

from __future__ import annotations

import inspect
import logging
import re

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from hsvae.utils.errors import ConfigError

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Checks of values that libraries' constructors would take and fail on late or deep inside (the optimiser is
    built at the first step, Lightning reads max_epochs as it goes). hsvae's own classes check their arguments in
    their constructors (reported by :func:`instantiate_node` under the config key)."""
    optimizer = cfg.get("model", {}).get("optimizer") or {}
    lr = optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"model.optimizer.lr must be > 0, got {lr}")
    weight_decay = optimizer.get("weight_decay")
    if weight_decay is not None and weight_decay < 0:
        raise ConfigError(f"model.optimizer.weight_decay must be >= 0, got {weight_decay}")
    max_epochs = cfg.get("trainer", {}).get("max_epochs")
    if max_epochs is not None and not (isinstance(max_epochs, int) and (max_epochs >= 1 or max_epochs == -1)):
        raise ConfigError(f"trainer.max_epochs must be an integer >= 1 (or -1 for no limit), got {max_epochs!r}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    accelerator = cfg.get("trainer", {}).get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU, and torch finds none on this machine: use "
            "trainer=cpu here (trainer=ddp trainer.accelerator=cpu for several CPU processes)")


def targets(node: object, cls: type) -> bool:
    """Whether a config node's ``_target_`` names ``cls`` or a subclass of it (by type, not by name: a name test
    for "VAEModule" would also accept SMILESVAEModule)."""
    target = OmegaConf.select(node, "_target_", default=None) if isinstance(node, DictConfig) else None
    if not target:
        return False
    try:
        return issubclass(hydra.utils.get_class(str(target)), cls)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def user_key(cfg: DictConfig, full_key: str) -> str:
    """The key a user sets for the config node at ``full_key``: an interpolation's source where the path passes
    through one (``model.net.latent`` is ``${latent}``, so ``latent``)."""
    parts, i = full_key.split("."), 0
    node: object = cfg
    while i < len(parts):
        child = node._get_node(parts[i]) if isinstance(node, DictConfig) else None  # noqa: SLF001 (OmegaConf API)
        if child is None:
            break
        if child._is_interpolation():  # noqa: SLF001
            source = re.fullmatch(r"\$\{([\w.]+)\}", str(child._value()))  # noqa: SLF001
            if source is None:
                break
            parts, i, node = source[1].split(".") + parts[i + 1:], 0, cfg
            continue
        node, i = child, i + 1
    return ".".join(parts)


def _argument_names(target: str) -> set[str]:
    try:
        return set(inspect.signature(hydra.utils.get_class(target)).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return set()


def instantiate_node(cfg: DictConfig, key: str, **kwargs):
    """``hydra.utils.instantiate`` of the config node at ``key``, with its constructors' argument checks reported
    as the config keys a user sets.

    Constructors validate their arguments once, in their own names (``dim must be an integer >= 1``); here a
    ValueError from a constructor becomes ``latent.dim must be ...`` (the argument's key, found from Hydra's
    ``full_key``), and an argument the class does not take (a protocol written for another model) is named
    with the choices that brought it together."""
    try:
        return hydra.utils.instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        found = re.search(r"full_key: ([\w.]+)", str(err))
        node_key = found[1] if found else key
        where, target = user_key(cfg, node_key), str(OmegaConf.select(cfg, f"{node_key}._target_", default="") or "")
        if isinstance(cause, TypeError):
            unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
            if unexpected is None:
                raise
            raise ConfigError(_not_an_argument(where, unexpected[1], target)) from err
        if type(cause) is not ValueError:  # (a subclass is a runtime error of its own: a missing file, ...)
            raise
        message = " ".join(str(cause).split())
        first = re.match(r"\w+", message)
        if first and first[0] in _argument_names(target):
            raise ConfigError(f"{where}.{message}") from err
        raise ConfigError(f"{where} ({target.rsplit('.', 1)[-1]}): {message}") from err


def _not_an_argument(where: str, name: str, target: str) -> str:
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model, task = choices.get("model", "?"), choices.get("task")
    if where.split(".")[0] != "model":
        return f"{where}.{name} is not an argument of {target}: drop it with ~{where}.{name}"
    origin = f"task={task} (dataset={choices.get('dataset')}'s protocol) sets it for another model" if task else \
        "it is not one of its arguments"
    return (f"{where}.{name} is not an argument of {target} (model={model}): {origin}. Pick a dataset or task "
            f"whose protocol trains model={model}, or drop the key with ~{where}.{name}")


def instantiate_model(cfg: DictConfig) -> pl.LightningModule:
    """``cfg.model``, instantiated (see :func:`instantiate_node`)."""
    return instantiate_node(cfg, "model")


def instantiate_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks; ``progress_bar=False`` (``trainer.enable_progress_bar=false``) leaves
    out the progress bar, which Lightning would refuse beside that flag."""
    callbacks: list[pl.Callback] = []
    for name, node in (cfg or {}).items():
        if name == "progress_bar" and not progress_bar:
            continue
        if isinstance(node, DictConfig) and "_target_" in node:
            callbacks.append(hydra.utils.instantiate(node))
        elif node is not None:
            log.debug("callback %s has no _target_ (disabled group with leftover settings); skipped", name)
    return callbacks
