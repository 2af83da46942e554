"""The uniform distribution on the sphere S^(m-1), the prior of the spherical VAEs."""

from __future__ import annotations

import torch
from torch.distributions import Distribution

from ._sphere import check_ambient_dim, log_sphere_surface, sample_uniform_sphere, unit_vector


class HypersphericalUniform(Distribution):
    """Uniform distribution on the unit sphere S^(m-1) in R^m.

    Dimension convention: ``m`` is the *ambient* dimension, the length of a sample's last
    axis (``event_shape == (m,)``); the sphere itself has intrinsic dimension m - 1.
    So the prior of a latent with intrinsic dimension d is ``HypersphericalUniform(d + 1)``.

    Args:
        m: ambient dimension, an integer >= 2.
        batch_shape: batch shape of the (identical) distributions.
        dtype, device: of the samples and of ``log_prob``.
    """

    arg_constraints = {}
    support = unit_vector
    has_rsample = True

    def __init__(
        self,
        m: int,
        batch_shape: torch.Size | tuple = torch.Size(),
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        validate_args: bool | None = None,
    ):
        self.m = check_ambient_dim(m)
        self.dtype = dtype or torch.get_default_dtype()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._log_area = log_sphere_surface(self.m)
        super().__init__(torch.Size(batch_shape), torch.Size([self.m]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(HypersphericalUniform, _instance)
        new.m, new.dtype, new.device, new._log_area = self.m, self.dtype, self.device, self._log_area
        super(HypersphericalUniform, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: torch.Size | tuple = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)[:-1]
        return sample_uniform_sphere(shape, self.m, dtype=self.dtype, device=self.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -self._log_area, dtype=value.dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        return torch.full(self.batch_shape, self._log_area, dtype=self.dtype, device=self.device)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device)

    def __repr__(self) -> str:
        return f"HypersphericalUniform(m={self.m}, batch_shape={tuple(self.batch_shape)})"
