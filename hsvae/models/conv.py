"""Convolutional encoder and decoder for small images (MNIST's 28x28), as plain ``nn.Module`` s.

The spherical-Cauchy paper compares latent families on MNIST with a convolutional VAE; these are its
networks in the shape that :class:`~hsvae.models.VAE` expects:

- ``ConvEncoder``: images ``(B, C, H, W)`` (or flattened ``(B, C*H*W)``) -> features ``(B, out_features)``.
  Stride-2 convolutions (kernel 4, padding 1) halve the resolution per layer: 28 -> 14 -> 7 with the
  default ``channels=(32, 64)``; a fully connected layer maps the flattened maps to ``hidden`` features.
- ``ConvDecoder``: latent samples ``(..., in_features)`` -> likelihood parameters ``(..., C*H*W)`` (Bernoulli
  logits for MNIST), through the mirrored layers. The output is flat, as the likelihoods expect; any leading
  axes (importance samples, batch) are kept.

``in_features`` of the decoder is the latent's sample size (d for a Gaussian latent, d + 1 for a spherical one
on S^d); the VAE passes it when it builds the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_geometry(name: str, image_shape: Sequence[int], channels: Sequence[int], hidden: int) -> tuple[int, int, int]:
    if len(image_shape) != 3 or any(not isinstance(s, int) or s < 1 for s in image_shape):
        raise ValueError(f"{name}: image_shape must be (channels, height, width) of positive integers, got {image_shape!r}")
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"{name}: channels must be a non-empty list of positive integers, got {list(channels)!r}")
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{name}: hidden must be a positive integer, got {hidden!r}")
    c, h, w = image_shape
    factor = 2 ** len(channels)
    if h % factor or w % factor:
        raise ValueError(
            f"{name}: each of the {len(channels)} stride-2 layers halves the image, so height and width must be "
            f"divisible by {factor}; got image_shape={tuple(image_shape)}"
        )
    return c, h // factor, w // factor


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` -> features ``(B, hidden)``: stride-2 convolutions with ReLU, then a dense layer.

    Args:
        image_shape: ``(C, H, W)`` of one image ((1, 28, 28) for MNIST); H and W divisible by 2 ** len(channels).
        channels: output channels of the convolutions, one stride-2 layer each.
        hidden: size of the dense layer after the convolutions (``out_features``).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (32, 64), hidden: int = 256):
        super().__init__()
        image_shape, channels = tuple(image_shape), tuple(channels)
        _, h, w = _check_geometry("ConvEncoder", image_shape, channels, hidden)
        self.image_shape = image_shape
        self.out_features = hidden
        layers: list[nn.Module] = []
        for c_in, c_out in zip((image_shape[0], *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Flatten(1), nn.Linear(channels[-1] * h * w, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.image_shape
        if x.dim() == 2 and x.shape[1] == expected[0] * expected[1] * expected[2]:
            x = x.reshape(x.shape[0], *expected)
        elif x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"ConvEncoder expects images of shape (B, {', '.join(map(str, expected))}) (model.net.encoder.image_shape) "
                f"or their flattened rows, got {tuple(x.shape)}"
            )
        return self.dense(self.conv(x))


class ConvDecoder(nn.Module):
    """Latent samples ``(..., in_features)`` -> flat likelihood parameters ``(..., C*H*W)`` (no final activation).

    The mirror of :class:`ConvEncoder`: dense layers up to ``channels[-1]`` maps of size ``H / 2**L``, then
    transposed stride-2 convolutions (ReLU between them) back to ``C`` channels at ``H x W``.

    Args:
        in_features: the latent's sample size (d, or d + 1 on the sphere S^d); the VAE sets it.
        image_shape: ``(C, H, W)`` of one image.
        channels: the encoder's channels (the decoder runs through them in reverse).
        hidden: size of the first dense layer.
    """

    def __init__(
        self,
        in_features: int,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
    ):
        super().__init__()
        image_shape, channels = tuple(image_shape), tuple(channels)
        c, h, w = _check_geometry("ConvDecoder", image_shape, channels, hidden)
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"ConvDecoder: in_features (the latent sample size) must be a positive integer, got {in_features!r}")
        self.image_shape = image_shape
        self.out_features = image_shape[0] * image_shape[1] * image_shape[2]
        self._maps = (channels[-1], h, w)
        self.dense = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, channels[-1] * h * w), nn.ReLU()
        )
        layers: list[nn.Module] = []
        outs = (*reversed(channels[:-1]), c)
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self._maps)
        return self.deconv(h).reshape(*lead, self.out_features)
