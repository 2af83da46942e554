"""``python train.py ... seeds=[s_1,...,s_K]``: a run's seeds as one stacked fit (:mod:`hsvae.stack`), written as K
runs.

The members are built as K separate runs with ``seed=s_i`` build theirs (seeded: data module, model), fit together
as one computation (each member's data and its selection and early stopping on its own validation metric; the
members' noise drawn together, from one stream seeded with the first seed), and then each member is written as its
separate run would be, into ``<output_dir>/seed_<s_i>/``: ``.hydra/config.yaml`` (``seed: s_i``),
``.hydra/overrides.yaml`` (the job's overrides with ``seeds=[...]`` replaced by ``seed=s_i``),
``checkpoints/best.ckpt`` (its best epoch), ``results.json`` (the test of that checkpoint, its draws started from
the seed as in eval.py) and its logs. A member has no ``train/`` metrics of its own (the training step sees the
members' rows as one batch): its record carries the stack's mean as ``stack/train/...``; its validation and test
metrics are its own, with its best epoch's (``best/epoch``, ``best/val_...``). ``make_tables`` and
``eval.py`` read the members as K runs; the job's own folder holds ``stack.json`` and is not a run.

A member is statistically, not bitwise, its separate run (its noise comes from the stack's stream). What a stack
supports is checked before anything is built (:func:`check_stackable`; a task's batches and network when the stack
is built: docs/ARCHITECTURE.md, "The stack"). An interrupted stack continues when run again into its folder
(:func:`stack_checkpoint`), not through ``ckpt_path``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from hsvae.cli.instantiation import instantiate_model, targets
from hsvae.cli.records import save_run_config
from hsvae.cli.run_loggers import finish_wandb, instantiate_loggers, log_hyperparameters
from hsvae.cli.sweep_job import member_overrides
from hsvae.cli.report import collect_metrics, print_table, write_results
from hsvae.cli.continuation import finished_metrics
from hsvae.cli.evaluators import instantiate_evaluators
from hsvae.cli.signals import lightning_interruptions
from hsvae.cli.stages import instantiate_datamodule
from hsvae.stack import MemberSelection, StackedData, StackedTask, member_metrics_at
from hsvae.training.callbacks import FigureCallback, FigureContext
from hsvae.training.checkpoint_io import AtomicCheckpointIO
from hsvae.utils.io import write_json_atomic, write_text_atomic
from hsvae.utils.errors import ConfigError

log = logging.getLogger(__name__)


def stack_seeds(cfg: DictConfig) -> list[int] | None:
    """The stack's seeds (``seeds``), checked, or None for an ordinary run."""
    seeds = cfg.get("seeds")
    if seeds is None:
        return None
    seeds = list(seeds) if not isinstance(seeds, (int, str)) else None
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be a list of distinct integers >= 0 (e.g. seeds=[0,1,2]), got "
                          f"{cfg.get('seeds')!r}")
    return seeds


#: a stack's last epoch (parameters, optimiser, each member's stream, selection and history), rewritten every epoch
STACK_CHECKPOINT = Path("checkpoints") / "stack_last.ckpt"
#: the config sections that make a stack's checkpoint its own (a second lease may change e.g. max_epochs)
_STACK_IDENTITY = ("model", "latent", "dataset", "data_spec")


def _identity(cfg: DictConfig) -> dict[str, Any]:
    return {key: OmegaConf.to_container(cfg[key], resolve=False) for key in _STACK_IDENTITY if key in cfg}


def stack_checkpoint(cfg: DictConfig, output_dir: Path, seeds: list[int]) -> Path | None:
    """The last checkpoint of this stack (the same seeds, model, latent and data) interrupted in ``output_dir``,
    which a run of it continues (a sweep run again in a second GPU lease continues its unfinished cells); else
    None."""
    path = output_dir / STACK_CHECKPOINT
    try:
        saved = json.loads((output_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    if not path.is_file() or saved.get("seeds") != seeds or saved.get("identity") != _identity(cfg):
        return None
    return path


def finished_stack_metrics(output_dir: Path, seeds: list[int]) -> dict[str, float] | None:
    """The members' mean metrics when every member of the stack in ``output_dir`` finished (a sweep run again,
    e.g. in a second GPU lease, skips the cells it already has), else None."""
    finished = [finished_metrics(output_dir / f"seed_{seed}") for seed in seeds]
    if any(metrics is None for metrics in finished):
        return None
    return _mean_metrics(finished)


def _mean_metrics(members: list[dict[str, float]]) -> dict[str, float]:
    """The members' mean of every metric they all have (what train.py returns for a stack)."""
    keys = set.intersection(*(set(m) for m in members))
    return {k: sum(m[k] for m in members) / len(members) for k in sorted(keys)}


def check_stackable(cfg: DictConfig) -> None:
    """ConfigError, naming the key, for what a stack does not support: a stage (M1+M2), a scheduler outside
    torch.optim.lr_scheduler, compile, ckpt_path, a learnt prior, several devices."""
    if cfg.get("m1") is not None:
        raise ConfigError("seeds=[...]: an M1+M2 run trains its M1 first (a stage), which a stack does not run: run "
                          "its seeds separately (seed=0,1,2 with -m)")
    scheduler = OmegaConf.select(cfg, "model.scheduler._target_", default=None)
    if scheduler is not None and not scheduler.startswith("torch.optim.lr_scheduler."):
        raise ConfigError(f"model.scheduler._target_={scheduler}: a stack knows its members' rates under a "
                          f"torch.optim.lr_scheduler class only: use one, or run the seeds separately (seed=0,1,2 -m)")
    if cfg.get("compile", False):
        raise ConfigError("compile: a stack runs eager (its networks run under torch.vmap); drop compile=true")
    if OmegaConf.select(cfg, "ckpt_path", default=None) is not None:
        raise ConfigError("ckpt_path: resuming a stack from a checkpoint is not supported; run the same command into "
                          "the stack's folder again (it continues from its checkpoints/stack_last.ckpt)")
    prior = OmegaConf.select(cfg, "latent.prior", default="uniform")
    if prior not in ("uniform", "standard"):
        raise ConfigError(f"latent.prior={prior}: the members of a stack share one latent family, which a learnt "
                          f"prior would make one model; run its seeds separately")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    if devices not in (1, "1", [0]):
        raise ConfigError(f"trainer.devices={devices}: a stack runs on one device (its members share it)")


def _member_config(cfg: DictConfig, seed: int, member_dir: Path) -> DictConfig:
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.seed = seed
        member.seeds = None
        member.paths.output_dir = str(member_dir)
    return member


def _save_member_run_config(member_cfg: DictConfig, member_dir: Path, seed: int) -> None:
    """Its config, and the job's overrides with ``seeds=...`` (and any ``seed=``) replaced by ``seed=<seed>``."""
    save_run_config(member_cfg, member_dir)
    if HydraConfig.initialized():
        overrides = member_overrides(list(HydraConfig.get().overrides.task), seed)
        write_text_atomic(member_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(overrides))


def _save_member_checkpoint(model: pl.LightningModule, path: Path, epoch: int, global_step: int) -> None:
    """The member's best state as the checkpoint a separate run's ModelCheckpoint writes (what eval.py and
    ``ckpt_path`` read: the module's state dict and hyperparameters)."""
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "epoch": epoch,
                  "global_step": global_step, "pytorch-lightning_version": pl.__version__}
    AtomicCheckpointIO().save_checkpoint(checkpoint, path)


def run_stacked(cfg: DictConfig, output_dir: Path, seeds: list[int], started: float,
                commit: str | None, resume: Path | None = None) -> dict[str, Any]:
    """Fit the members together (from ``resume``, the stack's last checkpoint, when given), then test and write
    each as its run; return the members' mean metrics."""
    check_stackable(cfg)
    log.info("a stack of %d runs (seeds %s), each written to %s/seed_<seed>/", len(seeds), seeds, output_dir)
    if resume is not None:
        log.info("continuing the interrupted stack from %s", resume)
    members, evaluations = [], []
    for seed in seeds:  # each member built as its separate run builds it: its data split and initialisation
        member_dir = output_dir / f"seed_{seed}"
        member_cfg = _member_config(cfg, seed, member_dir)
        pl.seed_everything(seed, workers=True, verbose=False)
        datamodule = instantiate_datamodule(member_cfg)
        model = instantiate_model(member_cfg)
        evaluations.append(instantiate_evaluators(member_cfg, datamodule, model))  # (checked before the fit)
        members.append((seed, member_dir, member_cfg, datamodule, model))
    write_json_atomic(output_dir / "stack.json", {"seeds": seeds, "members": [f"seed_{s}" for s in seeds],
                                                   "identity": _identity(cfg)})
    pl.seed_everything(seeds[0], workers=True, verbose=False)  # the members' draws: one stream, from the first seed
    try:
        module = StackedTask([m[4] for m in members])
    except ValueError as error:  # what the generic stack cannot take from this task, in the config's words
        raise ConfigError(f"seeds=[...]: model {OmegaConf.select(cfg, 'model._target_')} does not stack ({error}); "
                          f"run its seeds separately (seed=0,1,2 with -m)") from error
    selection = MemberSelection(len(seeds), *_selection_rule(cfg, module.task.monitor),
                                stopping=_member_stopping(cfg))
    progress = cfg.trainer.get("enable_progress_bar", True) is not False
    # (after the selection: the last checkpoint holds its epoch)
    last = ModelCheckpoint(dirpath=output_dir / STACK_CHECKPOINT.parent, filename=STACK_CHECKPOINT.stem, monitor=None,
                           save_top_k=1, every_n_epochs=1, enable_version_counter=False)
    trainer = pl.Trainer(**_trainer_arguments(cfg), callbacks=[selection, last], logger=False,
                         enable_progress_bar=progress, plugins=[AtomicCheckpointIO()])
    with lightning_interruptions(trainer):
        trainer.fit(module, datamodule=StackedData([m[3] for m in members]),
                    ckpt_path=None if resume is None else str(resume))

    all_metrics = []
    for i, (seed, member_dir, member_cfg, datamodule, model) in enumerate(members):
        _save_member_run_config(member_cfg, member_dir, seed)
        loggers = _member_loggers(member_cfg, seed, selection.rows[i])
        model.net.load_state_dict(module.member_state(i), strict=False)  # its parameters, under its network's names
        if not trainer.fast_dev_run:  # the final epoch's figures, drawn as its separate run's are
            context = FigureContext(datamodule, loggers, trainer.global_step)
            for node in (member_cfg.get("callbacks") or {}).values():
                if targets(node, FigureCallback):
                    hydra.utils.instantiate(node).draw(context, model, "final")
        if selection.best_states[i] is not None:
            model.net.load_state_dict(selection.best_states[i], strict=False)
        _save_member_checkpoint(model, member_dir / "checkpoints" / "best.ckpt", selection.best_epochs[i],
                                trainer.global_step)
        # its best epoch and its validation metrics there (what a VGAE's run records as best/...)
        best = {f"best/{k.replace('/', '_')}": v for k, v in selection.best_metrics[i].items()}
        metrics = {**member_metrics_at(selection.rows[i], "stack/train/"), **member_metrics_at(selection.rows[i], "val/"),
                   **best, f"best/{selection.monitor.replace('/', '_')}": selection.best_scores[i],
                   "best/epoch": float(selection.best_epochs[i])}
        if cfg.get("test", True):
            pl.seed_everything(seed, workers=True, verbose=False)  # as eval.py: the test's draws from the seed
            tester = pl.Trainer(**_trainer_arguments(member_cfg), logger=False, enable_checkpointing=False,
                                enable_progress_bar=progress, callbacks=[evaluations[i]])
            tester.test(model, datamodule=datamodule)
            metrics = collect_metrics(tester, metrics)
        _close_member_loggers(loggers, metrics, trainer.global_step, trainer.current_epoch)
        write_results(member_dir, member_cfg, metrics, wall_time_s=time.time() - started, commit=commit,
                      extra={"test_checkpoint": str(member_dir / "checkpoints" / "best.ckpt"),
                             "epochs": trainer.current_epoch, "global_step": trainer.global_step,
                             "stack": {"seeds": seeds, "member": i, "best_epoch": selection.best_epochs[i]}})
        all_metrics.append(metrics)
    _print_members(seeds, all_metrics, output_dir)
    (output_dir / "results.json").unlink(missing_ok=True)  # an earlier attempt's record: this stack is done
    return _mean_metrics(all_metrics)


def _selection_rule(cfg: DictConfig, monitor: str) -> tuple[str, str]:
    """The run's checkpoint selection (``callbacks.model_checkpoint``'s monitor and mode; else the task's monitor,
    higher is better)."""
    node = OmegaConf.select(cfg, "callbacks.model_checkpoint", default=None) or {}
    return node.get("monitor") or monitor, node.get("mode") or "max"


def _member_stopping(cfg: DictConfig):
    """Makes a member's EarlyStopping from the run's ``callbacks.early_stopping`` (None when it has none)."""
    node = OmegaConf.select(cfg, "callbacks.early_stopping", default=None)
    return None if node is None else (lambda: hydra.utils.instantiate(node))


def _member_loggers(member_cfg: DictConfig, seed: int, rows: list[tuple[int, dict[str, float]]]) -> list:
    """Member i's own loggers (its separate run's: CSV in its folder, W&B named and grouped as its job), given its
    config and its per-epoch history."""
    loggers = instantiate_loggers(member_cfg.get("logger"), seed=seed)
    log_hyperparameters(member_cfg, loggers)
    for logger in loggers:
        for row_step, row in rows:
            logger.log_metrics(row, row_step)
    return loggers


def _close_member_loggers(loggers: list, metrics: dict[str, float], step: int, epoch: int) -> None:
    """The member's test metrics, as its separate run logs them after its fit; then its loggers are closed (one
    member's W&B run at a time)."""
    test = {k: v for k, v in metrics.items() if k.startswith("test/")}
    for logger in loggers:
        if test:
            logger.log_metrics({**test, "epoch": epoch}, step)
        logger.finalize("success")
    finish_wandb(loggers)


#: up to this many members, the summary has a column per member (more do not fit a terminal's width)
_MEMBER_COLUMNS = 4


def _print_members(seeds: list[int], all_metrics: list[dict[str, float]], output_dir: Path) -> None:
    """The members' test metrics and best validation scores, a column per member (a few members) or their
    mean, standard deviation, minimum and maximum (more), and where the members' runs are."""
    import statistics

    per_member = len(seeds) <= _MEMBER_COLUMNS
    rows = []
    for key in sorted(k for k in all_metrics[0] if k.startswith("test/") or k.startswith("best/")):
        values = [metrics.get(key, float("nan")) for metrics in all_metrics]
        rows.append((key, values if per_member else
                     [statistics.fmean(values), statistics.stdev(values), min(values), max(values)]))
    print_table(f"hsvae stack of {len(seeds)} runs (seeds {seeds})",
                [f"seed {seed}" for seed in seeds] if per_member else ["mean", "std", "min", "max"], rows,
                f"{output_dir}/seed_<seed>/ (results.json, checkpoints/best.ckpt), one folder per seed")


def _trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The run's ``trainer`` settings a stack's Lightning trainer takes as they are (its callbacks, logger and
    checkpointing are the stack's own)."""
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in ("_target_", "callbacks", "logger", "enable_checkpointing", "enable_progress_bar", "plugins"):
        arguments.pop(key, None)
    return arguments
