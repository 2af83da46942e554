"""Datasets and Lightning data modules (in memory; batches are ``(x, y)`` tuples)."""

from .base import DatasetNotFoundError, InMemoryDataModule, Split
from .loaders import TensorLoader
from .mnist import MNISTDataModule, load_mnist
from .synthetic import SyntheticSphereDataModule, make_synthetic_sphere

__all__ = [
    "DatasetNotFoundError",
    "InMemoryDataModule",
    "MNISTDataModule",
    "Split",
    "SyntheticSphereDataModule",
    "TensorLoader",
    "load_mnist",
    "make_synthetic_sphere",
]
