"""Lightning modules and callbacks (no Hydra here: the CLI wires configs to these)."""

from .callbacks import ImageSamplesCallback, InterpolationCallback, LatentPlotCallback
from hsvae.utils.errors import NonFiniteLossError
from .link_module import LinkPredictionModule
from .m2_module import M2Module
from .smiles_module import SMILESVAEModule
from .task import ELBOTask
from .vae_module import VAEModule

__all__ = ["ELBOTask", "ImageSamplesCallback", "InterpolationCallback", "LatentPlotCallback", "LinkPredictionModule", "M2Module", "NonFiniteLossError", "SMILESVAEModule", "VAEModule"]
