"""Errors raised by the training loop."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stops at once (checkpoints already written are kept)."""
