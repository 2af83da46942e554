"""OmegaConf resolvers the configs use (registered when ``hsvae.cli`` is imported).

``${hsvae.if_le:x,threshold,a,b}`` is ``a`` when ``x <= threshold`` and ``b`` otherwise. The
latent-comparison experiment uses it for its dimension-dependent learning rate,
``lr: ${hsvae.if_le:${latent.dim},3,3.0e-4,1.0e-4}``, so that one sweep over ``latent.dim`` gives every
run the learning rate of the spherical-Cauchy paper's protocol (an explicit ``model.optimizer.lr=...`` on the
command line still wins).
"""

from __future__ import annotations

from omegaconf import OmegaConf


def if_le(x, threshold, a, b):
    """``a`` if ``x <= threshold`` else ``b`` (``x`` and ``threshold`` numbers)."""
    for name, value in (("x", x), ("threshold", threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"hsvae.if_le: {name} must be a number, got {value!r}")
    return a if x <= threshold else b


def register_resolvers() -> None:
    """Register the ``hsvae.*`` resolvers once (idempotent)."""
    if not OmegaConf.has_resolver("hsvae.if_le"):
        OmegaConf.register_new_resolver("hsvae.if_le", if_le)


register_resolvers()
