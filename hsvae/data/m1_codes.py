"""A labelled image dataset seen through a trained M1 VAE: its latent means, for M1+M2 (Kingma et al. 2014).

Every image of the train / validation / test splits is replaced by its M1 code z1 (the posterior location:
a point of R^d, or a unit vector on S^d), computed once with the frozen M1 encoder. The training split is
divided into a class-balanced labelled subset of ``n_labels`` codes (seeded) and the unlabelled rest.

Training batches are ``(z1_unlabelled, z1_labelled, y_labelled)``: one pass over the unlabelled codes is an
epoch, and every step also draws a batch of the (small) labelled set, reshuffled each time it is exhausted.
With ``sample_codes`` (the default, as in Kingma et al.'s code) the training codes of a batch are fresh draws
from the M1 posterior q(z1 | x) of its images, not the posterior locations: a latent dimension the M1 does
not use is then prior noise rather than a near-constant the M2 would spend its likelihood on fitting.
The unlabelled codes' labels are kept in ``splits["train"].y`` for diagnostics but never batched.
Validation and test batches are ``(z1, y)`` with the posterior locations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from hsvae.evaluation.semisupervised import balanced_subset

from .base import InMemoryDataModule, Split
from .loaders import TensorLoader


class SemiSupervisedLoader:
    """Pairs every batch of an unlabelled loader with the next batch of a cycled labelled loader; ``codes`` (if
    given) maps each batch's rows to the codes yielded (e.g. posterior parameters to a posterior draw)."""

    def __init__(self, unlabelled: TensorLoader, labelled: TensorLoader,
                 codes: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.unlabelled, self.labelled = unlabelled, labelled
        self.codes = codes
        self._labelled_iter: Iterator | None = None

    def __len__(self) -> int:
        return len(self.unlabelled)

    def _next_labelled(self) -> tuple[torch.Tensor, ...]:
        if self._labelled_iter is not None:
            batch = next(self._labelled_iter, None)
            if batch is not None:
                return batch
        self._labelled_iter = iter(self.labelled)  # a new epoch of the labelled set: a new permutation
        return next(self._labelled_iter)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for (z_u,) in self.unlabelled:
            z_l, y_l = self._next_labelled()
            if self.codes is not None:
                z_u, z_l = self.codes(z_u), self.codes(z_l)
            yield z_u, z_l, y_l


@runtime_checkable
class M1Encoder(Protocol):
    """What the M2's data needs of an M1: its latent family and point embeddings (a trained
    :class:`~hsvae.models.VAE` is one)."""

    latent: Any

    def embed(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SamplingM1Encoder(M1Encoder, Protocol):
    """An M1 whose posterior can be sampled: its raw posterior parameters (``latent.posterior`` of them is q)."""

    def posterior_params(self, x: torch.Tensor) -> torch.Tensor: ...


class M1CodesDataModule(InMemoryDataModule):
    """The M1 latent means of an image data module's splits, with a labelled subset of the training split.

    Args:
        m1: the trained M1 model (e.g. a :class:`~hsvae.models.VAE`): ``m1.embed(x)`` gives latent means and
            ``m1.latent`` the latent family; it is frozen and set to eval mode here.
        images: the labelled image data module (e.g. MNIST) whose splits are encoded. Its training split
            is encoded as stored: use a fixed binarisation (``binarize="static"``) for a model trained on
            binarised images, so that training and test codes come from the same kind of input.
        n_labels: size of the class-balanced labelled subset of the training split (a multiple of the classes).
        labelled_batch_size: labelled codes per training step (at most ``n_labels``).
        batch_size: unlabelled codes per training step.
        eval_batch_size, seed: see :class:`~hsvae.data.InMemoryDataModule`; ``seed`` also draws the labelled
            subset, and replaces ``images.seed`` (the image splits and any fixed binarisation follow it).
        sample_codes: train on fresh draws from the M1 posterior (Kingma et al.'s code; needs
            ``m1.posterior_params``), or on the posterior locations (False). Evaluation always uses the locations.
    """

    def __init__(
        self,
        m1: nn.Module,
        images: InMemoryDataModule,
        n_labels: int = 100,
        labelled_batch_size: int = 100,
        batch_size: int = 100,
        eval_batch_size: int | None = 1000,
        seed: int = 0,
        sample_codes: bool = True,
    ):
        super().__init__(batch_size, eval_batch_size, seed)
        if not isinstance(m1, M1Encoder):
            raise ValueError(f"m1 must be a trained M1 VAE (with .embed and .latent), got {type(m1).__name__}")
        if sample_codes and not isinstance(m1, SamplingM1Encoder):
            raise ValueError(
                f"sample_codes=true draws the M2's training codes from the M1 posterior, but the M1 "
                f"({type(m1).__name__}) has no posterior_params; set sample_codes=false to train on its means"
            )
        if isinstance(labelled_batch_size, bool) or not isinstance(labelled_batch_size, int) or labelled_batch_size < 1:
            raise ValueError(f"labelled_batch_size must be a positive integer, got {labelled_batch_size!r}")
        if images.num_classes is None:
            raise ValueError(f"images ({type(images).__name__}) has no class labels (num_classes is None)")
        # fail before the (slow) encoding: n_labels must be a positive multiple of the classes
        if isinstance(n_labels, bool) or not isinstance(n_labels, int) or n_labels < 1 or n_labels % images.num_classes:
            raise ValueError(
                f"n_labels must be a positive multiple of the {images.num_classes} classes "
                f"(a class-balanced labelled subset), got {n_labels!r}"
            )
        self.m1 = m1.eval().requires_grad_(False)
        self.images = images
        images.seed = seed
        self.n_labels = n_labels
        self.labelled_batch_size = min(labelled_batch_size, n_labels)
        self.num_classes = images.num_classes
        self.sample_codes = bool(sample_codes)
        #: with sample_codes: the M1 posterior parameters of the "train" (unlabelled) and "labelled" codes
        self.posterior_params: dict[str, torch.Tensor] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.m1.latent.event_size,)

    @property
    def n_labelled(self) -> int:
        return len(self.splits["labelled"]) if self.splits else self.n_labels

    @property
    def n_unlabelled(self) -> int:
        return len(self.splits["train"])

    @torch.no_grad()
    def _through_m1(self, fn, x: torch.Tensor) -> torch.Tensor:
        """``fn`` of images ``x`` in batches of 1000 on the M1's device, gathered on the CPU."""
        device = next(self.m1.parameters()).device
        return torch.cat([fn(b.to(device)).cpu() for b in x.split(1000)])

    @torch.no_grad()
    def _encode_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The M1 posterior parameters of images ``x`` and the posterior locations, on the CPU."""
        params = self._through_m1(self.m1.posterior_params, x)
        return params, torch.cat([self.m1.latent.point(self.m1.latent.posterior(p)) for p in params.split(1000)])

    @torch.no_grad()
    def draw_codes(self, params: torch.Tensor) -> torch.Tensor:
        """One draw of z1 ~ q(z1 | x) per row of M1 posterior parameters (the global RNG: seeded runs repeat)."""
        return self.m1.latent.posterior(params).sample()

    def load_splits(self) -> dict[str, Split]:
        device = self._device()
        if device is not None:
            self.m1.to(device)  # encode on the training device (a GPU when there is one)
        self.images.setup()
        splits, params = {}, None
        for name, s in self.images.splits.items():
            if name == "train" and self.sample_codes:
                params, locations = self._encode_params(s.x.cpu())
                splits[name] = Split(locations, s.y.cpu())
            else:
                splits[name] = Split(self._through_m1(self.m1.embed, s.x.cpu()), s.y.cpu())
        train = splits["train"]
        idx = balanced_subset(train.y, self.n_labels, seed=self.seed, num_classes=self.num_classes)
        unlabelled = torch.ones(len(train), dtype=torch.bool)
        unlabelled[idx] = False
        splits["labelled"] = Split(train.x[idx], train.y[idx])
        splits["train"] = Split(train.x[unlabelled], train.y[unlabelled])
        if params is not None:
            self.posterior_params = {"labelled": params[idx], "train": params[unlabelled]}
        self.images.splits = {}  # the images are no longer needed
        return splits

    def train_dataloader(self) -> SemiSupervisedLoader:
        if not self.splits:
            self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        # rows of posterior parameters, turned into a fresh draw per batch, or the posterior locations themselves
        rows = self.posterior_params if self.sample_codes else {k: self.splits[k].x for k in ("train", "labelled")}
        unlabelled = TensorLoader(rows["train"], batch_size=self.batch_size, shuffle=True,
                                  seed=self.seed, rank=rank, world_size=world)
        # a different stream of permutations than the unlabelled loader's
        labelled_loader = TensorLoader(rows["labelled"], self.splits["labelled"].y, batch_size=self.labelled_batch_size,
                                       shuffle=True, drop_last=True, seed=self.seed + 1_000_003)
        return SemiSupervisedLoader(unlabelled, labelled_loader, self.draw_codes if self.sample_codes else None)
