"""The S-VAE paper's synthetic hyperspherical data: a mixture of three vMFs on the circle S^1,
mapped into R^100 by a fixed, noisy non-linear transformation. Generated in memory; no download.
"""

from __future__ import annotations

import math

import torch

from .base import InMemoryDataModule, Split


def make_synthetic_sphere(
    n: int,
    *,
    ambient_dim: int = 100,
    n_components: int = 3,
    concentration: float = 8.0,
    hidden: int = 64,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``n`` points. Returns ``(x, labels, angles)``: x in R^ambient_dim, the mixture component of
    each point and its angle on the circle (the true latent).

    The components have equally spaced mean angles and a common concentration; the map is a random
    one-hidden-layer tanh network (fixed by ``seed``) followed by Gaussian noise of scale ``noise``.
    """
    if n < 1 or ambient_dim < 2 or n_components < 1 or concentration <= 0 or noise < 0:
        raise ValueError(
            "make_synthetic_sphere: need n >= 1, ambient_dim >= 2, n_components >= 1, concentration > 0, "
            f"noise >= 0; got n={n}, ambient_dim={ambient_dim}, n_components={n_components}, "
            f"concentration={concentration}, noise={noise}"
        )
    g = torch.Generator().manual_seed(seed)
    # The transformation depends on the seed only, so all splits share it.
    w1 = torch.randn(2, hidden, generator=g) * 2.0
    b1 = torch.randn(hidden, generator=g)
    w2 = torch.randn(hidden, ambient_dim, generator=g) / math.sqrt(hidden)
    labels = torch.randint(n_components, (n,), generator=g)
    means = 2 * math.pi * labels.double() / n_components
    # von Mises angles on the circle (the vMF on S^1), by torch's exact sampler under a fixed seed.
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=g)))
        angles = torch.distributions.VonMises(means, torch.full_like(means, concentration)).sample()
    z = torch.stack([angles.cos(), angles.sin()], dim=-1).float()
    x = torch.tanh(z @ w1 + b1) @ w2 + noise * torch.randn(n, ambient_dim, generator=g)
    return x, labels, angles.float()


class SyntheticSphereDataModule(InMemoryDataModule):
    """Train/val/test splits of :func:`make_synthetic_sphere` (independent draws, one transformation).

    Batches are ``(x, label)``; the label is the generating mixture component. After :meth:`setup`, ``angles``
    (empty before) holds each split's true angles on the circle (for the latent-geometry measures).
    """

    num_classes = 3

    def __init__(
        self,
        n_train: int = 8000,
        n_val: int = 1000,
        n_test: int = 1000,
        ambient_dim: int = 100,
        concentration: float = 8.0,
        noise: float = 0.05,
        data_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = 1000,
        seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, seed)
        for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.kwargs = dict(ambient_dim=ambient_dim, concentration=concentration, noise=noise, seed=data_seed)
        self.input_shape = (ambient_dim,)
        self.angles: dict[str, torch.Tensor] = {}

    def load_splits(self) -> dict[str, Split]:
        sizes = list(self.sizes.values())
        x, y, angles = make_synthetic_sphere(sum(sizes), **self.kwargs)
        self.angles = dict(zip(self.sizes, angles.split(sizes)))
        return {name: Split(xs, ys) for name, xs, ys in zip(self.sizes, x.split(sizes), y.split(sizes))}
