"""The members' networks as one module: each parameterised part of a task's network (a VAE's encoder, head and
decoder) is a :class:`MemberSplit` of the members' copies, run under ``torch.vmap``; a part whose rows mix
(``mixes_rows``) has its children split instead (docs/ARCHITECTURE.md, "The stack"). The parameterless rest (the
latent family, the likelihood) runs unchanged on the members' rows as one batch.

Dimension convention: the members' rows are one batch ``(K * B, ...)``, member i's rows ``[i * B:(i + 1) * B]``;
a stacked parameter is ``(K, ...)``, member i's ``[i]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.utils._pytree import tree_map


class MemberSplit(nn.Module):
    """K copies of one network as one module. A part must act row by row (a batch's rows are independent data
    points: an MLP, a convolution, a recurrent encoder of a sequence), which is what lets the members' rows be one
    batch; it must hold no buffers (a batch norm's running statistics would be updated inside vmap).

    ``forward`` takes the members' rows as one batch (``(K * B, ...)``, each positional argument) and runs member i
    on its rows; under :meth:`only` it runs one member on that member's own batch (``(B, ...)``). ``parts``: the
    members' copies, each built (initialised) as its separate run built it."""

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        if not parts:
            raise ValueError("parts: a stack needs at least one member")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            if repr(part) != repr(first):
                raise ValueError(f"parts: member {i} is not built like member 0 (a stack needs one architecture)")
        if any(True for _ in first.buffers()):
            raise ValueError(f"parts: {type(first).__name__} holds buffers (running statistics), which a stack "
                             f"cannot update per member")
        params, _ = stack_module_state(list(parts))
        self.k = len(parts)
        self.names = list(params)
        for name, value in params.items():  # ('.' is not allowed in a parameter's own name)
            self.register_parameter(name.replace(".", "__"), nn.Parameter(value.detach().clone()))
        # the structure functional_call fills with a member's tensors, held in a list to stay out of the state dict
        self._skeleton = [copy.deepcopy(first).to("meta")]
        self._active: int | None = None

    def stacked(self) -> dict[str, torch.Tensor]:
        """The members' parameters under a member's names, ``(K, ...)`` each."""
        return {name: getattr(self, name.replace(".", "__")) for name in self.names}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's parameters: the state dict of the part its separate run would hold."""
        return {name: value[i] for name, value in self.stacked().items()}

    @contextmanager
    def only(self, i: int) -> Iterator[None]:
        """Run member i alone, on its own batch."""
        self._active = i
        try:
            yield
        finally:
            self._active = None

    def forward(self, *args: torch.Tensor):
        skeleton = self._skeleton[0].train(self.training)
        params = self.stacked()
        active = 0 if self.k == 1 else self._active  # (one member: its own rows, without vmap's overhead)
        if active is not None:
            return functional_call(skeleton, {n: p[active] for n, p in params.items()}, args)
        for arg in args:
            if arg.shape[0] % self.k:
                raise ValueError(f"a stacked part takes the members' rows as one batch (K * B = {self.k} * B), got "
                                 f"{tuple(arg.shape)}")
        # (vmap takes strided tensors: sparse rows, a graph's bag-of-words features, are made dense; on Cora with 10
        # members about 0.1 s of a 0.6 s CPU step, whose all-pairs losses dominate)
        split = [(arg if arg.layout == torch.strided else arg.to_dense()).unflatten(0, (self.k, -1)) for arg in args]
        out = torch.vmap(lambda p, *a: functional_call(skeleton, p, a), randomness="different")(params, *split)
        return tree_map(lambda t: t.flatten(0, 1) if isinstance(t, torch.Tensor) else t, out)


def split_network(net: nn.Module, nets: Sequence[nn.Module], prefix: str = "") -> dict[str, MemberSplit]:
    """Replace, in ``net`` (a copy of the first member's network), every child that has parameters by the
    :class:`MemberSplit` of the members' ``nets``' children of that name (within a child that ``mixes_rows``, its
    children); return them by their path in ``net``."""
    if any(True for _ in net.named_parameters(recurse=False)):
        raise ValueError(f"{type(net).__name__} has parameters of its own (not in a part): a stack splits parts")
    splits = {}
    for name, child in list(net.named_children()):
        if not any(True for _ in child.parameters()):
            continue
        if getattr(child, "mixes_rows", False):
            splits.update(split_network(child, [getattr(member, name) for member in nets], f"{prefix}{name}."))
        else:
            splits[prefix + name] = MemberSplit([getattr(member, name) for member in nets])
            setattr(net, name, splits[prefix + name])
    if not splits and not prefix:
        raise ValueError(f"{type(net).__name__} has no parameters: nothing to stack")
    return splits
