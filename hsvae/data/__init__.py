"""Datasets and Lightning data modules (in memory; batches are ``(x, y)`` tuples, or one graph for link prediction)."""

from hsvae.utils.errors import DatasetNotFoundError, MalformedDatasetError

from .base import InMemoryDataModule, Split
from .links import LinkPredictionDataModule, LinkSplit, split_edges
from .loaders import TensorLoader
from .mnist import MNISTDataModule, load_mnist
from .planetoid import PlanetoidLinkDataModule, load_planetoid
from .smiles import SMILESDataModule, SMILESTokenizer, read_smiles
from .synthetic import SyntheticSphereDataModule, make_synthetic_sphere

__all__ = [
    "DatasetNotFoundError",
    "InMemoryDataModule",
    "LinkPredictionDataModule",
    "LinkSplit",
    "MNISTDataModule",
    "MalformedDatasetError",
    "PlanetoidLinkDataModule",
    "SMILESDataModule",
    "SMILESTokenizer",
    "Split",
    "SyntheticSphereDataModule",
    "TensorLoader",
    "load_mnist",
    "load_planetoid",
    "make_synthetic_sphere",
    "read_smiles",
    "split_edges",
]
