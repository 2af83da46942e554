"""Networks as plain ``nn.Module`` s: they know nothing of Lightning or Hydra."""

from .conv import ConvDecoder, ConvEncoder
from .m2 import M2
from .mlp import MLPDecoder, MLPEncoder
from .smiles import SMILESVAE, SequenceELBOTerms
from .vae import VAE, BernoulliLikelihood, ELBOTerms, GaussianLikelihood, Likelihood
from .vgae import VGAE, GCNEncoder, VGAETerms

__all__ = [
    "BernoulliLikelihood",
    "ConvDecoder",
    "ConvEncoder",
    "ELBOTerms",
    "GCNEncoder",
    "GaussianLikelihood",
    "Likelihood",
    "M2",
    "MLPDecoder",
    "MLPEncoder",
    "SMILESVAE",
    "SequenceELBOTerms",
    "VAE",
    "VGAE",
    "VGAETerms",
]
