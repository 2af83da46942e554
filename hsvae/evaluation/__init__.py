"""Evaluation of learned latent spaces (k-NN classification of latent means, ...)."""

from .interpolation import decode_interpolations, latent_path, lerp, slerp
from .knn import knn_accuracy, knn_predict
from .molecules import rdkit_validity, sample_metrics
from .semisupervised import balanced_subset, m1_knn_accuracies

__all__ = ["balanced_subset", "decode_interpolations", "knn_accuracy", "knn_predict", "latent_path", "lerp", "m1_knn_accuracies",
           "rdkit_validity", "sample_metrics", "slerp"]
