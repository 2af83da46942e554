"""A run's records in its folder: its config (``.hydra/``) and its results.json (light: the failure path of every
entry point writes one, before torch may have been imported)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hsvae.analysis.results import RESULTS_FORMAT
from hsvae.utils.io import write_json_atomic, write_text_atomic
from hsvae.utils.run_info import git_commit, hardware


def write_record(output_dir: Path, cfg: DictConfig | None, status: str, metrics: dict, commit: str | None = None,
                 **fields) -> Path:
    """Write ``<output_dir>/results.json``: the status, the metrics, the seed, the commit (read when the run
    *started*, the code it imported; else now), the hardware, ``fields`` and the resolved config (unresolved when
    the config is the thing that failed to resolve). A run that did not finish ("failed", "interrupted",
    "skipped") has no metrics, and a one-line ``reason`` and its ``exit_code`` (an interruption's signal and phase
    too), so that a table lists it with its reason instead of an unexplained gap."""
    resolved = None
    if cfg is not None:
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
            resolved.pop("hydra", None)
        except Exception:  # noqa: BLE001 -- the config may be the thing that failed to resolve
            resolved = OmegaConf.to_container(cfg, resolve=False)
    data = {"format": RESULTS_FORMAT, "status": status, "metrics": metrics,
            "seed": cfg.get("seed") if cfg is not None else None,
            "commit": commit if commit is not None else git_commit(), "hardware": hardware(),
            "output_dir": str(output_dir), **fields, "config": resolved}
    path = Path(output_dir) / "results.json"
    write_json_atomic(path, data)
    return path


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
