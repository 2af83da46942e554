"""The Gaussian latent: a diagonal normal posterior and the standard normal prior.

Both are ``Independent(Normal, 1)`` so that a Gaussian latent answers exactly the same calls
as the spherical families (``rsample``, ``log_prob`` over the whole event, ``entropy``,
``mean``, ``mode``), and ``kl_divergence`` between them uses torch's registered closed form.

Dimension convention: the Gaussian lives in R^d; ``event_shape == (d,)`` is the last axis of ``loc``.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal


class DiagonalNormal(Independent):
    """N(loc, diag(scale^2)) over the last axis of ``loc`` (``event_shape == (d,)``)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        super().__init__(Normal(loc, scale, validate_args=validate_args), 1, validate_args=validate_args)

    @property
    def loc(self) -> torch.Tensor:
        return self.base_dist.loc

    @property
    def scale(self) -> torch.Tensor:
        return self.base_dist.scale

    def expand(self, batch_shape, _instance=None):
        base = self.base_dist.expand(torch.Size(batch_shape) + self.event_shape)
        # the parameters were validated when this instance was made; keep the setting for samples
        new = DiagonalNormal(base.loc, base.scale, validate_args=False)
        new._validate_args = new.base_dist._validate_args = self._validate_args
        return new


class StandardNormal(DiagonalNormal):
    """The standard normal prior N(0, I) on R^d."""

    def __init__(
        self,
        d: int,
        batch_shape: torch.Size | tuple = torch.Size(),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ):
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"dimension d must be an integer >= 1, got d={d!r}")
        shape = torch.Size(batch_shape) + (d,)
        zeros = torch.zeros(shape, dtype=dtype or torch.get_default_dtype(), device=device)
        super().__init__(zeros, torch.ones_like(zeros), validate_args=validate_args)
