"""Networks as plain ``nn.Module`` s: they know nothing of Lightning or Hydra."""

from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood
from .mlp import MLPDecoder, MLPEncoder
from .vae import VAE, ELBOTerms

__all__ = [
    "BernoulliLikelihood",
    "ELBOTerms",
    "GaussianLikelihood",
    "Likelihood",
    "MLPDecoder",
    "MLPEncoder",
    "VAE",
]
