"""Convolutional encoder and decoder for small images (MNIST's 28x28), as plain ``nn.Module`` s.

The spherical-Cauchy paper compares latent families on MNIST with a convolutional VAE; these are its
networks in the shape that :class:`~hsvae.models.VAE` expects (the decoder's output is flat, as the likelihoods
expect; any leading axes, importance samples and batch, are kept).

``model=conv_vae`` is our original small network (channels (32, 64): 28 -> 14 -> 7, dense 256, a mirrored decoder
of kernel-4 transposed convolutions); ``model=conv_vae_sc`` the spherical-Cauchy authors' backbone (channels
(32, 64, 128), kernel 4: 28 -> 14 -> 7 -> 3, dense 128; a decoder from 128 maps of 7x7 through kernel-3 transposed
convolutions and a final 3x3 convolution at 28x28).

``in_features`` of the decoder is the latent's sample size (d for a Gaussian latent, d + 1 for a spherical one
on S^d); the VAE passes it when it builds the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_common(name: str, image_shape: Sequence[int], channels: Sequence[int], hidden: int,
                  kernel_size: int) -> None:
    if len(image_shape) != 3 or not all(_positive_int(s) for s in image_shape):
        raise ValueError(f"{name}: image_shape must be (channels, height, width) of positive integers, got {image_shape!r}")
    if not channels or not all(_positive_int(c) for c in channels):
        raise ValueError(f"{name}: channels must be a non-empty list of positive integers, got {list(channels)!r}")
    if not _positive_int(hidden):
        raise ValueError(f"{name}: hidden must be a positive integer, got {hidden!r}")
    if not _positive_int(kernel_size) or kernel_size < 2:
        raise ValueError(f"{name}: kernel_size of the stride-2 layers must be an integer >= 2, got {kernel_size!r}")


def _halved(size: int, kernel_size: int) -> int:
    """A stride-2 convolution's output size with padding (kernel_size - 1) // 2 (rounds down: 7 -> 3 for kernel 4)."""
    return (size + 2 * ((kernel_size - 1) // 2) - kernel_size) // 2 + 1


class ConvEncoder(nn.Module):
    """Images ``(B, C, H, W)`` (or flattened ``(B, C*H*W)``) -> features ``(B, hidden)``: stride-2 convolutions with
    ReLU, then a dense layer.

    Args:
        image_shape: ``(C, H, W)`` of one image ((1, 28, 28) for MNIST).
        channels: output channels of the convolutions, one stride-2 layer each (sizes round down; each must stay
            at least 1).
        hidden: size of the dense layer after the convolutions (``out_features``).
        kernel_size: kernel of the convolutions (padding ``(kernel_size - 1) // 2``).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (32, 64), hidden: int = 256,
                 kernel_size: int = 4):
        super().__init__()
        image_shape, channels = tuple(image_shape), tuple(channels)
        _check_common("ConvEncoder", image_shape, channels, hidden, kernel_size)
        h, w = image_shape[1:]
        for _ in channels:
            h, w = _halved(h, kernel_size), _halved(w, kernel_size)
        if h < 1 or w < 1:
            raise ValueError(f"ConvEncoder: {len(channels)} stride-2 layers of kernel {kernel_size} shrink "
                             f"image_shape={image_shape} to nothing; use fewer channels entries")
        self.image_shape = image_shape
        self.out_features = hidden
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = []
        for c_in, c_out in zip((image_shape[0], *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=kernel_size, stride=2, padding=padding), nn.ReLU()]
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

    Dense layers (``in_features -> hidden -> channels[-1] * H/2**U * W/2**U``, ReLU) and transposed stride-2
    convolutions through ``channels`` in reverse, each doubling the maps exactly, ReLU between the layers. Without
    ``final_kernel_size`` the last transposed convolution outputs the ``C`` image channels (``U = len(channels)``);
    with it, the transposed convolutions end at ``channels[0]`` maps of full resolution and a stride-1 convolution
    of that kernel maps them to ``C`` channels (``U = len(channels) - 1``): the output pixels are then a non-linear
    function of full-resolution features, not a linear one of half-resolution ones.

    Args:
        in_features: the latent's sample size (d, or d + 1 on the sphere S^d); the VAE sets it.
        image_shape: ``(C, H, W)`` of one image; H and W divisible by ``2**U``.
        channels: channels in the encoder's order (the decoder runs through them in reverse).
        hidden: size of the first dense layer.
        kernel_size: kernel of the transposed convolutions (padding ``(k - 1) // 2``, output padding ``k % 2``: an
            exact doubling for any kernel >= 2).
        final_kernel_size: kernel (odd, "same" padding) of a final full-resolution convolution; None: none.
    """

    def __init__(
        self,
        in_features: int,
        image_shape: Sequence[int] = (1, 28, 28),
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        kernel_size: int = 4,
        final_kernel_size: int | None = None,
    ):
        super().__init__()
        image_shape, channels = tuple(image_shape), tuple(channels)
        _check_common("ConvDecoder", image_shape, channels, hidden, kernel_size)
        if not _positive_int(in_features):
            raise ValueError(f"ConvDecoder: in_features (the latent sample size) must be a positive integer, got {in_features!r}")
        if final_kernel_size is not None and not (_positive_int(final_kernel_size) and final_kernel_size % 2 == 1):
            raise ValueError(f"ConvDecoder: final_kernel_size must be an odd positive integer (same padding) or null, "
                             f"got {final_kernel_size!r}")
        c, h, w = image_shape
        upsampling = len(channels) - (final_kernel_size is not None)
        factor = 2**upsampling
        if h % factor or w % factor:
            raise ValueError(f"ConvDecoder: each of the {upsampling} transposed stride-2 layers doubles the maps, so "
                             f"height and width must be divisible by {factor}; got image_shape={image_shape}")
        self.image_shape = image_shape
        self.out_features = c * h * w
        self._maps = (channels[-1], h // factor, w // factor)
        self.dense = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, channels[-1] * h // factor * w // factor),
            nn.ReLU(),
        )
        outs = (*reversed(channels[:-1]), c)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(reversed(channels), outs[:upsampling]):
            layers += [nn.ConvTranspose2d(c_in, c_out, kernel_size=kernel_size, stride=2, padding=(kernel_size - 1) // 2,
                                          output_padding=kernel_size % 2), nn.ReLU()]
        if final_kernel_size is not None:
            layers.append(nn.Conv2d(channels[0], c, kernel_size=final_kernel_size, padding=final_kernel_size // 2))
        else:
            layers.pop()  # the last transposed convolution gives the likelihood's parameters: no ReLU after it
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self._maps)
        return self.deconv(h).reshape(*lead, self.out_features)
