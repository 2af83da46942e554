"""Precision under autocast: the special functions and the distributions compute in their own dtype.

Under ``torch.autocast`` (``trainer.precision=bf16-mixed`` or ``16-mixed``) matrix products of float32 tensors run
in bfloat16 or float16, which would round the Bessel series, the dot products of unit vectors and the quadrature
sums to 2-3 digits. The few products those computations use run under :func:`autocast_off`; elementwise ops keep
their inputs' dtype under autocast, and the distributions promote half-precision parameters to float32.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_off", "at_least_float32"]

_NULL = contextlib.nullcontext()  # reusable: it holds no state


def autocast_off(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast leaves the matrix products on ``t``'s device in their inputs' dtype
    (a no-op where autocast is off)."""
    if t.dtype is torch.float64:  # autocast never casts float64 (and checking costs ~7 us on the hot paths)
        return _NULL
    device_type = t.device.type
    # (devices without autocast, such as meta, have nothing to turn off)
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return _NULL


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is float16 or bfloat16 (a network's output under autocast), else unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
