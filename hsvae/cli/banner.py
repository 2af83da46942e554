"""The few lines a run prints before it starts: what it trains, on what, for how long, where, and into which folder.

    hsvae train (seed 0)
      latent     VonMisesFisher, d=2: S^2 in R^3
      data       SyntheticSphere (dataset=synthetic)
      model      VAEModule: VAE, MLPEncoder (model=mlp_vae)
      training   at most 20 epochs; early stopping on val/elbo (max), patience 5
      selection  best.ckpt by val/elbo (max)
      evaluation ll, knn, geometry
      set by     model=mlp_vae (default of train.yaml)
                 latent.dim=2 (from latent=vmf)
                 trainer.max_epochs=20 (from task=svae_synthetic, via dataset=synthetic)
                 callbacks.early_stopping.monitor=val/elbo (from callbacks/early_stopping.yaml, via callbacks=default)
                 callbacks.early_stopping.patience=5 (from task=svae_synthetic, via dataset=synthetic)
                 callbacks.model_checkpoint.monitor=val/elbo (from callbacks/model_checkpoint.yaml, via callbacks=default)
      device     cpu, 1 device
      output     logs/train/runs/2025-01-01_12-00-00
      resume     logs/train/runs/.../checkpoints/last.ckpt

Nothing here may fail a run: a value that cannot be read or resolved is shown as "?". The config-group choices
in parentheses, and the "set by" lines (which config file, or the command line, set each protocol value:
hsvae/cli/provenance.py), appear only for a config that carries Hydra's node (``return_hydra_config``) or is the
running Hydra job's own (not an M1 trained inside an M1+M2 job, which has a config of its own).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from hsvae.cli.provenance import protocol_lines
from hsvae.latents.base import latent_space

_UNKNOWN = "?"


def _get(cfg: DictConfig, key: str, default=None):
    try:
        return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    except Exception:  # an interpolation that cannot resolve here (e.g. ${hydra:...} outside a Hydra app)
        return default


def _class_name(target: object | None) -> str:
    return str(target).rsplit(".", 1)[-1] if target else _UNKNOWN


def _chosen(cfg: DictConfig, group: str, text: str) -> str:
    """``text (dataset=mnist)``: the config-group option a run chose, when ``cfg`` carries Hydra's node (a config
    composed with ``return_hydra_config``). Not from the running app's HydraConfig: an M1 trained inside an
    M1+M2 job has its own config, whose choices are not the app's."""
    choice = _get(cfg, f"hydra.runtime.choices.{group}")
    return f"{text} ({group}={choice})" if choice not in (None, "null") else text


def _sources(cfg: DictConfig) -> tuple[dict, list[str], bool] | None:
    """The group choices, the job's overrides and whether it is a sweep's job, of the Hydra job that composed
    ``cfg``: from its Hydra node, else from the running app's when ``cfg`` is that job's (same output folder)."""
    try:
        hydra_node = _get(cfg, "hydra")
        if hydra_node is None:
            from hydra.core.hydra_config import HydraConfig

            if not HydraConfig.initialized():
                return None
            hydra_node = HydraConfig.get()
            if str(_get(cfg, "paths.output_dir")) != str(hydra_node.runtime.output_dir):
                return None
        choices = OmegaConf.to_container(hydra_node.runtime.choices)
        overrides = [str(o) for o in hydra_node.overrides.task]
        multirun = str(_get(hydra_node, "mode")) in ("RunMode.MULTIRUN", "MULTIRUN")
    except Exception:
        return None
    return choices, overrides, multirun


def selection(cfg: DictConfig) -> str:
    """The checkpoint the test stage uses: ``best.ckpt by val/elbo (max)``, or the last epoch's."""
    checkpoint = _get(cfg, "callbacks.model_checkpoint")
    if not isinstance(checkpoint, DictConfig) or not checkpoint.get("_target_"):
        return "none: the last epoch is tested"
    monitor = _get(checkpoint, "monitor")
    if monitor is None:
        return "the last epoch"
    return f"{_get(checkpoint, 'filename', 'best')}.ckpt by {monitor} ({_get(checkpoint, 'mode', 'min')})"


def describe_latent(latent: DictConfig | None) -> str:
    """``"VonMisesFisher, d=2: S^2 in R^3"`` / ``"Gaussian, d=10: R^10"`` from a latent config node."""
    if not latent:
        return _UNKNOWN
    target = _get(latent, "_target_")
    family = _class_name(target).removesuffix("Latent")
    dim = _get(latent, "dim")
    if not isinstance(dim, int):
        return f"{family}, d={dim if dim is not None else _UNKNOWN}"
    try:  # (a small module: building it is the one way to know its spheres; a bad config fails later, by key)
        import hydra

        spheres = hydra.utils.instantiate(latent).spheres
    except Exception:
        spheres = ()
    return f"{family}, d={dim}: {latent_space(spheres, dim)}"


def describe_model(cfg: DictConfig) -> str:
    """``"VAEModule: VAE, ConvEncoder (model=conv_vae)"``: the Lightning module, its network and encoder."""
    targets = (_get(cfg, "model.net._target_"), _get(cfg, "model.net.encoder._target_"))
    parts = [_class_name(t) for t in targets if t]
    return _chosen(cfg, "model", _class_name(_get(cfg, "model._target_")) + (f": {', '.join(parts)}" if parts else ""))


def stopping_rule(cfg: DictConfig) -> str:
    """Epoch / step / time limits of the trainer and the early-stopping rule, if any, in words."""
    trainer = _get(cfg, "trainer") or {}
    if trainer.get("fast_dev_run"):
        return "fast_dev_run (one batch of each stage)"
    parts = []
    max_epochs = trainer.get("max_epochs")
    if max_epochs in (None, -1):
        parts.append("no epoch limit")
    else:
        parts.append(f"at most {max_epochs} epoch{'s' if max_epochs != 1 else ''}")
    max_steps = trainer.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0:
        parts.append(f"at most {max_steps} steps")
    if trainer.get("max_time"):
        parts.append(f"at most {trainer.get('max_time')} of wall time")
    rule = ", ".join(parts)
    stop = _get(cfg, "callbacks.early_stopping")
    if isinstance(stop, DictConfig) and stop.get("_target_"):
        monitor = _get(stop, "monitor", _UNKNOWN)
        mode, patience = _get(stop, "mode", "min"), _get(stop, "patience", 3)
        rule += f"; early stopping on {monitor} ({mode}), patience {patience}"
    else:
        rule += "; no early stopping"
    return rule


def device(cfg: DictConfig) -> str:
    trainer = _get(cfg, "trainer") or {}
    accelerator = trainer.get("accelerator", "auto")
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int):
        text = f"{accelerator}, {devices} device{'s' if devices != 1 else ''}"
    else:
        text = f"{accelerator}, devices={OmegaConf.to_container(devices) if OmegaConf.is_config(devices) else devices}"
    strategy = trainer.get("strategy")
    if strategy not in (None, "auto"):
        text += f", strategy={strategy}"
    nodes = trainer.get("num_nodes")
    if isinstance(nodes, int) and nodes > 1:
        text += f", {nodes} nodes"
    if trainer.get("precision") not in (None, "32-true", 32, "32"):
        text += f", precision={trainer.get('precision')}"
    return text


def evaluators(cfg: DictConfig) -> str:
    """The test stage's evaluators (``evaluation``'s keys with a ``_target_``), or "none"."""
    chosen = [name for name, node in (_get(cfg, "evaluation") or {}).items()
              if isinstance(node, DictConfig) and "_target_" in node]
    return ", ".join(chosen) or "none"


def start_banner(cfg: DictConfig, ckpt_path: str | None = None) -> str:
    """A few lines describing the run ``cfg`` is about to start (see the module docstring): ``cfg`` is the composed
    train.py config (for eval.py, the training run's with the evaluation's paths, trainer and ``task_name=eval``);
    ``ckpt_path`` the checkpoint the caller resolved (``auto_resume``, eval.py's), default ``cfg.ckpt_path``."""
    task = _get(cfg, "task_name", "train")
    evaluating = task == "eval" or not _get(cfg, "train", True)
    seed = _get(cfg, "seed")
    lines = [f"hsvae {task}" + (f" (seed {seed})" if seed is not None else "")]

    def add(label: str, value: str) -> None:
        lines.append(f"  {label:<10} {value}")

    add("latent", describe_latent(_get(cfg, "latent")))
    if _get(cfg, "m1.latent") is not None:
        m1_ckpt = _get(cfg, "m1.ckpt_path")
        add("M1", describe_latent(_get(cfg, "m1.latent"))
            + (f" (checkpoint {m1_ckpt})" if m1_ckpt else " (trained first, in this job)"))
    data = _class_name(_get(cfg, "dataset._target_"))
    add("data", _chosen(cfg, "dataset", data.removesuffix("DataModule") or data))
    add("model", describe_model(cfg))
    add("training", "none: tests the checkpoint" if evaluating else stopping_rule(cfg))
    if not evaluating:
        add("selection", selection(cfg))
    add("evaluation", evaluators(cfg))
    sources = None if evaluating else _sources(cfg)
    if sources is not None:
        try:
            set_by = protocol_lines(cfg, *sources)
        except Exception:
            set_by = [_UNKNOWN]
        for i, line in enumerate(set_by):
            add("set by" if i == 0 else "", line)
    add("device", device(cfg))
    add("output", str(_get(cfg, "paths.output_dir", _UNKNOWN)))
    ckpt = ckpt_path if ckpt_path is not None else _get(cfg, "ckpt_path")
    if ckpt:
        add("checkpoint" if evaluating else "resume", str(ckpt))
    return "\n".join(lines)
