"""Lightning modules and callbacks (no Hydra here: the CLI wires configs to these)."""

from .callbacks import ImageSamplesCallback, LatentPlotCallback
from .errors import NonFiniteLossError
from .vae_module import VAEModule

__all__ = ["ImageSamplesCallback", "LatentPlotCallback", "NonFiniteLossError", "VAEModule"]
