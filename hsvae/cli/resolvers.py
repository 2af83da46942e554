"""OmegaConf resolvers the configs use (registered when ``hsvae.cli`` is imported).

``${hsvae.if_le:x,threshold,a,b}`` is ``a`` when ``x <= threshold`` and ``b`` otherwise. The
latent-comparison experiment uses it for its dimension-dependent learning rate,
``lr: ${hsvae.if_le:${latent.dim},3,3.0e-4,1.0e-4}``, so that one sweep over ``latent.dim`` gives every
run the learning rate of the spherical-Cauchy paper's protocol (an explicit ``model.optimizer.lr=...`` on the
command line still wins).

``${hsvae.best_metric:<monitor>}`` names the metric train.py reports for a monitored checkpoint: the default
``optimized_metric`` follows whatever the selected protocol selects its checkpoint by.

``${hsvae.cwd:}`` is the directory the command was started from. ``paths.root_dir`` uses it instead of
``${hydra:runtime.cwd}``, which Hydra sets only inside a job: a multirun resolves ``hydra.sweep.dir`` (and so
``paths.log_dir``) in the launching process, before any job exists. Hydra never changes the working directory
here (``hydra.job.chdir: false``), so both give the same directory wherever they can both be read.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def if_le(x, threshold, a, b):
    """``a`` if ``x <= threshold`` else ``b`` (``x`` and ``threshold`` numbers)."""
    for name, value in (("x", x), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"hsvae.if_le: {name} must be a number, got {value!r}")
    return a if x <= threshold else b


def best_metric(monitor: str | None) -> str | None:
    """``best/<monitor with / as _>``: the results.json key under which train.py reports the checkpoint
    callback's best value (``val/auc_ap`` -> ``best/val_auc_ap``), or None without a monitored checkpoint."""
    return f"best/{monitor.replace('/', '_')}" if monitor else None


def register_resolvers() -> None:
    """Register the ``hsvae.*`` resolvers once (idempotent)."""
    for name, resolver in (("hsvae.if_le", if_le), ("hsvae.best_metric", best_metric), ("hsvae.cwd", os.getcwd)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


register_resolvers()
