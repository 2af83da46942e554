"""The record of a run that did not finish (light: the failure path of every entry point writes it, before torch may
have been imported)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hsvae.analysis.results import RESULTS_FORMAT
from hsvae.utils.io import write_json_atomic
from hsvae.utils.run_info import git_commit, hardware


def write_failure(output_dir: Path, cfg: DictConfig | None, status: str, reason: str, exit_code: int,
                  extra: dict | None = None) -> Path:
    """Write results.json for a run that did not finish: ``status`` ("failed", "interrupted" or "skipped"), the
    one-line reason, the exit code and ``extra`` (an interruption's signal and phase), so that a table lists the
    run with its reason instead of an unexplained gap."""
    resolved = None
    if cfg is not None:
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
            resolved.pop("hydra", None)
        except Exception:  # noqa: BLE001 -- the config may be the thing that failed to resolve
            resolved = OmegaConf.to_container(cfg, resolve=False)
    data = {
        "format": RESULTS_FORMAT,
        "status": status,
        "reason": reason,
        "exit_code": exit_code,
        **(extra or {}),
        "metrics": {},
        "seed": cfg.get("seed") if cfg is not None else None,
        "commit": git_commit(),
        "hardware": hardware(),
        "output_dir": str(output_dir),
        "config": resolved,
    }
    path = Path(output_dir) / "results.json"
    write_json_atomic(path, data)
    return path
