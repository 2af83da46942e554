"""What evaluators read from the data and the model, as typed interfaces (``typing.Protocol``).

A data module offers an evaluator's needs by having the members named here (it need not inherit from them);
:class:`~hsvae.evaluation.evaluator.Evaluator` checks them once, at setup, with ``isinstance``, and names what is
missing in one line. Nothing else asks a data module what it has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class LabelledSplits(Protocol):
    """Labelled points per split: ``splits["train" | "val" | "test"]`` with inputs ``x`` and class labels ``y``;
    ``num_classes`` (None: read from the labels), ``seed`` (the run's, which draws the data's random parts), and
    ``fixed_inputs(x, seed)``: inputs as the model sees them, drawn once with ``seed`` where the data draws them
    afresh for every batch (MNIST's dynamic binarisation), else ``x`` itself."""

    splits: Mapping[str, Any]
    num_classes: int | None
    seed: int

    def fixed_inputs(self, x: torch.Tensor, seed: int) -> torch.Tensor: ...


@runtime_checkable
class KnownAngles(LabelledSplits, Protocol):
    """Points generated on a circle whose true angles are known: ``angles[split]`` (radians, one per point)."""

    angles: Mapping[str, torch.Tensor]


@runtime_checkable
class LinkGraph(Protocol):
    """One graph whose test batch holds the held-out pairs: ``eval_pairs("test") -> (pairs, 0/1 labels)``."""

    graph: Any


@runtime_checkable
class SMILESCorpus(Protocol):
    """SMILES strings per split: token ids and lengths in ``splits[split].x`` / ``.y``, the strings in ``smiles``,
    ``tokenizer.decode_batch(ids) -> strings``, and ``unknown_strings[split]`` (strings with a token outside the
    training vocabulary)."""

    splits: Mapping[str, Any]
    smiles: Mapping[str, list[str]]
    tokenizer: Any
    unknown_strings: Mapping[str, int]


@runtime_checkable
class ImportanceSampled(Protocol):
    """A network with an importance-sampled ``log_likelihood(x, n_samples, on_chunk=...)`` per point and a
    ``latent`` (whose ``has_prior`` says whether p(x) is defined)."""

    latent: nn.Module

    def log_likelihood(self, x: torch.Tensor, n_samples: int = ..., chunk: int = ...,
                       on_chunk: Callable[[int], None] | None = ...) -> torch.Tensor: ...


@runtime_checkable
class Embeds(Protocol):
    """A network mapping inputs to their posterior locations, ``embed(x) -> (B, event_size)``, with a ``latent``
    (whose ``spheres`` list its spherical blocks: the k-NN's distance is the cosine on the sphere)."""

    latent: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Generates(Embeds, Protocol):
    """A sequence network that decodes latent points greedily or by sampling: ``generate(z, ...) -> ids``, with its
    padding id ``pad_id``."""

    pad_id: int

    def generate(self, z: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class ScoresPairs(Protocol):
    """A Lightning module scoring a graph's held-out pairs: ``pair_scores(graph, stage) -> (logits, labels)``."""

    def pair_scores(self, graph: Any, stage: str) -> tuple[torch.Tensor, torch.Tensor]: ...
