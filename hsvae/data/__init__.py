"""Datasets and Lightning data modules (in memory; batches are ``(x, y)`` tuples, or one graph for link prediction)."""

from .base import DatasetNotFoundError, InMemoryDataModule, Split
from .links import LinkPredictionDataModule, LinkSplit, split_edges
from .loaders import TensorLoader
from .mnist import MNISTDataModule, load_mnist
from .planetoid import PlanetoidLinkDataModule, load_planetoid
from .synthetic import SyntheticSphereDataModule, make_synthetic_sphere

__all__ = [
    "DatasetNotFoundError",
    "InMemoryDataModule",
    "LinkPredictionDataModule",
    "LinkSplit",
    "MNISTDataModule",
    "PlanetoidLinkDataModule",
    "Split",
    "SyntheticSphereDataModule",
    "TensorLoader",
    "load_mnist",
    "load_planetoid",
    "make_synthetic_sphere",
    "split_edges",
]
