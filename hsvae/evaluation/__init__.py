"""Evaluation of learned latent spaces (k-NN classification of latent means, ...)."""

from .knn import knn_accuracy, knn_predict

__all__ = ["knn_accuracy", "knn_predict"]
