"""Turn composed configs into Lightning objects, with the checks that must happen before training."""

from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger

from hsvae.training.loggers import CSVLogger
from hsvae.utils.errors import ConfigError
from hsvae.utils.io import write_text_atomic

log = logging.getLogger(__name__)



def validate(cfg: DictConfig) -> None:
    """Checks of values that libraries' constructors would take and fail on late or deep inside (the optimiser is
    built at the first step, Lightning reads max_epochs as it goes). hsvae's own classes check their arguments in
    their constructors (reported by :func:`instantiate_node` under the config key)."""
    optimizer = cfg.get("model", {}).get("optimizer") or {}
    lr = optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"model.optimizer.lr must be > 0, got {lr}")
    for key in ("weight_decay",):
        value = optimizer.get(key)
        if value is not None and value < 0:
            raise ConfigError(f"model.optimizer.{key} must be >= 0, got {value}")
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


#: What marks a directory as some run's: its config, checkpoints or results.
RUN_MARKERS = ("results.json", "checkpoints", ".hydra")


def check_output_dir(output_dir: str | Path, allow_overwrite: bool) -> None:
    """Refuse to write into another run's directory (nothing is written before this check)."""
    output_dir = Path(output_dir)
    found = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if found and not allow_overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a run ({', '.join(found)}): choose another directory (hydra.run.dir=...), "
            "resume that run with ckpt_path=<it>/checkpoints/last.ckpt, or pass allow_overwrite=true to replace it."
        )


def save_run_config(cfg: DictConfig, output_dir: str | Path) -> None:
    """Write ``<output_dir>/.hydra/`` (config.yaml; hydra.yaml and overrides.yaml when Hydra runs this job), each
    file atomically. Hydra's own writing is off (``hydra.output_subdir: null``) because it happens before any
    check: a refused run would already have rewritten the config of the run it was refused to overwrite."""
    folder = Path(output_dir) / ".hydra"
    write_text_atomic(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        if Path(hc.runtime.output_dir).resolve() == Path(output_dir).resolve():
            write_text_atomic(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hc}))
            write_text_atomic(folder / "overrides.yaml", OmegaConf.to_yaml(hc.overrides.task))


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


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def sweep_job() -> dict | None:
    """In a Hydra multirun: the job number, the sweep directory and this job's overrides; else None.
    In a hyperparameter search (an Optuna sweeper) also ``study`` (its study name) and ``params`` (this
    trial's values of the parameters in ``hydra.sweeper.params``)."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    job = {"num": hc.job.num, "sweep_dir": hc.sweep.dir, "overrides": list(hc.overrides.task),
           "name": hc.job.override_dirname}
    study = hc.sweeper.get("study_name")
    if study:
        searched = {str(k) for k in (hc.sweeper.get("params") or {})} | _searched_on_command_line(hc.sweep.dir)
        pairs = (o.lstrip("+~").partition("=") for o in job["overrides"])
        job["study"] = str(study)
        job["params"] = {key: _scalar(value) for key, _, value in pairs if key in searched}
    return job


def member_overrides(overrides: list[str], seed: int) -> list[str]:
    """A job's overrides as a stack's member's separate job has them: ``seeds=...`` (and any ``seed=``) replaced
    by ``seed=<seed>``."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("seeds", "seed")] + [f"seed={seed}"]


def member_job(seed: int) -> dict | None:
    """:func:`sweep_job` as the separate job of a stack's member would see it: its ``seeds=[...]`` override
    replaced by ``seed=<seed>`` (in the overrides and the job's name)."""
    job = sweep_job()
    if job is None:
        return None
    stacked = [o for o in job["overrides"] if o not in member_overrides(job["overrides"], seed)]
    job["overrides"] = member_overrides(job["overrides"], seed)
    name = job["name"] or ""
    for override in stacked:
        name = name.replace(override, f"seed={seed}" if override.lstrip("+~").startswith("seeds") else "")
    job["name"] = ",".join(part for part in name.split(",") if part) or f"seed={seed}"
    return job


def _searched_on_command_line(sweep_dir: str) -> set[str]:
    """The searched parameters listed in the sweep's search.yaml (hsvae.sweeps.optuna_search writes it before the first
    trial), which include sweeps given on the command line rather than in hydra.sweeper.params."""
    import yaml

    try:
        return set((yaml.safe_load((Path(sweep_dir) / "search.yaml").read_text()) or {}).get("params") or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return set()


def _scalar(text: str) -> int | float | str:
    """An override's value as a number where it is one (W&B plots numbers on a numeric axis)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def wandb_run_id(output_dir: Path) -> str | None:
    """The id of the W&B run written under ``output_dir/wandb`` (online ``run-<time>-<id>`` or offline
    ``offline-run-<time>-<id>`` folders; the newest), or None."""
    runs = sorted((output_dir / "wandb").glob("*run-*-*"), key=lambda p: p.name.rsplit("run-", 1)[-1])
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def instantiate_loggers(cfg: DictConfig | None, resume_dir: Path | None = None, seed: int | None = None) -> list:
    """Instantiate the ``logger`` group. W&B: offline without a key; in a multirun, every job of the sweep
    goes into one group named after the task (a search: its study) and the sweep directory, tagged with its
    swept values (a search: its trial's parameters, and the rest of its overrides). ``resume_dir``: the run
    being resumed in place, whose W&B run is continued (same id). ``seed``: the loggers of a stack's member
    (``seeds=[...]``), named and tagged as the separate job with ``seed=<seed>`` would be."""
    loggers = []
    job = sweep_job() if seed is None else member_job(seed)
    for name, node in (cfg or {}).items():
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        if targets(node, WandbLogger):
            with open_dict(node):
                if node.get("offline") is None:
                    node.offline = not _wandb_has_key()
                if node.offline:
                    os.environ.setdefault("WANDB_MODE", "offline")
                if job is not None:
                    prefix = job.get("study") or node.get("group") or "sweep"
                    node.group = f"{prefix}-{Path(job['sweep_dir']).name}"
                    node.tags = [*(node.get("tags") or []), *job["overrides"]][:64]
                    node.name = node.get("name") or job["name"] or f"job{job['num']}"
                run_id = wandb_run_id(resume_dir) if resume_dir is not None else None
                if run_id is not None:
                    node.id, node.resume = run_id, "allow"
                Path(node.save_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(hydra.utils.instantiate(node))
    return loggers


def continue_history(loggers: list, until_epoch: int) -> None:
    """A run resumed in place keeps its metric history: the CSV rows of the epochs its checkpoint covers.
    (TensorBoard appends a new event file to the same folder; W&B continues the same run id.)"""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            kept = logger.continue_history(until_epoch)
            log.info("resume: kept %d rows of %s (epochs <= %d)", kept, Path(logger.log_dir) / "metrics.csv",
                     until_epoch)


def logged_final_metrics(loggers: list) -> dict[str, float]:
    """The final epoch's metrics as a resumed run's CSV history kept them (empty without a CSV logger)."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            return logger.final_epoch_metrics()
    return {}


def assign_job_gpu(cfg: DictConfig) -> None:
    """In a multirun on a machine with GPUs, pin job N to GPU N mod (number of GPUs).

    With the joblib launcher running k jobs at once on g GPUs, each job gets its own GPU when k <= g,
    and small runs share GPUs round-robin when k > g. Only for single-device trainers on GPU; a CPU run,
    a DDP run, or an explicit device list is left alone.
    """
    job = sweep_job()
    if job is None or not cfg.get("gpu_per_job", True) or not torch.cuda.is_available():
        return
    trainer = cfg.trainer
    if trainer.get("accelerator") not in ("gpu", "cuda", "auto") or trainer.get("devices") not in (1, "1", None):
        return
    if trainer.get("strategy") not in (None, "auto"):
        return
    with open_dict(trainer):
        trainer.devices = [job["num"] % torch.cuda.device_count()]


def log_hyperparameters(cfg: DictConfig, loggers: list) -> None:
    """Send the resolved config to every logger (W&B shows it as the run config)."""
    if not loggers:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    resolved.pop("hydra", None)
    job = sweep_job()
    if job is not None and "study" in job:
        # a search's trial: its sampled values side by side as scalars (a list-valued parameter such as
        # model.net.encoder.hidden is a string here), for W&B's parallel-coordinates view
        trial = cfg.get("trial")  # the study's trial number (set by the sweeper); the job's number otherwise
        resolved["search"] = {"study": job["study"], "trial": job["num"] if trial is None else int(trial),
                              "params": job["params"]}
    for logger in loggers:
        logger.log_hyperparams(resolved)
