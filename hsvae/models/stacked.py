"""K independent VAEs trained as one computation: a table cell's seeds in one process.

The members' networks are stacked on a leading axis (``torch.func.stack_module_state``) and evaluated with
``torch.vmap``, so one step is a few batched matrix products instead of K small steps. Everything random is
drawn per member from that member's own stream of the global generator (:class:`MemberStreams`): the data's
binarisation and the latent's sampler draw, for member i, exactly what a separate run of member i draws, in the
same order, so member i of a stack and a separate run with its seed give the same losses, gradients and
parameters. The KL and the likelihood are batched over the members (a posterior with batch shape ``(K, B)``).

Members are independent: the stacked loss is the sum of the members' losses, whose gradient in each member's
parameters is that member's own gradient; an elementwise optimiser (Adam) over the stacked parameters is then K
independent optimisers.

Dimension convention: a stacked batch is ``(K, B, ...)``; member i's view is ``[i]``.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from hsvae.latents import PosteriorSample

from .mlp import MLPDecoder, MLPEncoder
from .vae import VAE

#: the networks a VAE member stacks (its latent family is shared: a parameterless one, the same for every member)
_STACKED_PARTS = ("encoder", "head", "decoder")
#: parameterless elementwise layers, which act on a stacked tensor as on each member's
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity)


def _layer_chain(part: nn.Module) -> tuple[list[tuple[str, nn.Module]], bool] | None:
    """A network that is a chain of linear layers and elementwise activations (a linear head, the MLP encoder and
    decoder) as its layers with their state-dict prefixes and whether its input is flattened first; else None.

    On a CPU the stacked chain's batched products (weights stacked as ``(K, in, out)``) cost what the members'
    own products cost, where vmap over the modules copies transposed weights every step."""
    if type(part) is nn.Linear:
        return [("", part)], False
    if type(part) in (MLPEncoder, MLPDecoder):
        layers = [(f"net.{name}.", layer) for name, layer in part.net.named_children()]
        if all(type(layer) is nn.Linear or type(layer) in _ELEMENTWISE for _, layer in layers):
            return layers, type(part) is MLPEncoder
    return None


class MemberStreams:
    """One state of the global random number generator per member (CPU, and the current CUDA device's when
    CUDA is in use): ``with streams.member(i):`` draws from member i's stream, which then continues where a
    separate run of member i would be.

    Args:
        states: each member's generator state, e.g. ``torch.get_rng_state()`` after seeding it and building its
            model, as a separate run would have it at its first step.
        cuda_states: the same for the CUDA generator (None: CPU only).
    """

    def __init__(self, states: Sequence[torch.Tensor], cuda_states: Sequence[torch.Tensor] | None = None):
        self.states = [s.clone() for s in states]
        self.cuda_states = None if cuda_states is None else [s.clone() for s in cuda_states]

    def __len__(self) -> int:
        return len(self.states)

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Draws inside leave every member's stream where it was (as Lightning's sanity check leaves a run's)."""
        states = [s.clone() for s in self.states]
        cuda_states = None if self.cuda_states is None else [s.clone() for s in self.cuda_states]
        try:
            yield
        finally:
            self.states, self.cuda_states = states, cuda_states

    @contextmanager
    def member(self, i: int) -> Iterator[None]:
        outer = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state() if self.cuda_states is not None else None
        torch.set_rng_state(self.states[i])
        if self.cuda_states is not None:
            torch.cuda.set_rng_state(self.cuda_states[i])
        try:
            yield
        finally:
            self.states[i] = torch.get_rng_state()
            torch.set_rng_state(outer)
            if self.cuda_states is not None:
                self.cuda_states[i] = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(outer_cuda)


@dataclass
class StackedELBOTerms:
    """The members' ELBO terms, shapes ``(K, B)``, and each member's posterior draw."""

    reconstruction: torch.Tensor
    kl: torch.Tensor
    samples: list[PosteriorSample]

    def member_losses(self, beta: float = 1.0) -> torch.Tensor:
        """Each member's mean negative (beta-weighted) ELBO, shape ``(K,)``, through its latent's estimator."""
        reconstruction = torch.stack([s.surrogate(r) for s, r in zip(self.samples, self.reconstruction)])
        return -(reconstruction - beta * self.kl).mean(-1)

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """The sum of the members' losses: its gradient in member i's parameters is member i's gradient."""
        return self.member_losses(beta).sum()


class MemberStack(nn.Module):
    """What every stack of K models of one architecture shares: the checks, the members' tensors stacked on a
    leading axis (parameters stay parameters, buffers buffers), member i's tensors under a separate model's names,
    and the latent family (one, parameterless, shared by the members) and random streams.

    Args:
        members: the K models, each built (and initialised) as a separate run would build it.
        streams: each member's random stream at the start (:class:`MemberStreams`).
        names: the entries of a member's state dict to stack (``encoder.net.0.weight``, ...).
        transposed: those of ``names`` (matrices) stacked transposed, ``(K, in, out)`` for a linear layer's
            ``(out, in)`` weight: the layout a batched product ``x @ W`` reads without copies.
    """

    def __init__(self, members: Sequence[nn.Module], streams: MemberStreams, names: Sequence[str],
                 transposed: Collection[str] = ()):
        super().__init__()
        if not members:
            raise ValueError("members: a stack needs at least one model")
        if len(streams) != len(members):
            raise ValueError(f"streams: {len(streams)} random streams for {len(members)} members")
        first = members[0]
        for i, member in enumerate(members[1:], start=1):
            if repr(member) != repr(first):
                raise ValueError(f"members: member {i} is not built like member 0 (a stack needs one architecture)")
        if first.latent.prior_is_learnt:
            raise ValueError("members: a latent with learnt parameters (a learnt prior) cannot be shared by a stack")
        self.k = len(members)
        self.latent = first.latent
        self.streams = streams
        self._names = list(names)
        self._transposed = frozenset(transposed)
        parameters = dict(first.named_parameters())
        states = [m.state_dict() for m in members]
        for name in self._names:
            value = torch.stack([state[name].T if name in self._transposed else state[name] for state in states])
            value = value.detach().clone()
            if name in parameters:
                self.register_parameter(self._flat(name), nn.Parameter(value))
            else:
                self.register_buffer(self._flat(name), value)

    @staticmethod
    def _flat(name: str) -> str:
        return name.replace(".", "__")

    def stacked(self, name: str) -> torch.Tensor:
        """The members' ``name`` (a separate model's name) stacked, ``(K, ...)``."""
        return getattr(self, self._flat(name))

    def member(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's tensors under a separate model's names: the state dict of the model its separate run would
        hold."""
        return {name: self.stacked(name)[i].T if name in self._transposed else self.stacked(name)[i]
                for name in self._names}


class StackedVAE(MemberStack):
    """K VAEs of one architecture as one module (see the module docstring).

    Args:
        members: the K VAEs, each built (and initialised) as a separate run would build it.
        streams: each member's random stream at the start (:class:`MemberStreams`).
    """

    def __init__(self, members: Sequence[VAE], streams: MemberStreams):
        first = members[0] if members else None
        names, transposed = [], []
        chains: dict[str, tuple[list[tuple[str, nn.Module]], bool]] = {}
        for part in _STACKED_PARTS if first is not None else ():
            if any(True for _ in getattr(first, part).buffers()):
                raise ValueError(f"members: the {part} has buffers, which a stack does not carry yet")
            names += [f"{part}.{name}" for name, _ in getattr(first, part).named_parameters()]
            chain = _layer_chain(getattr(first, part))
            if chain is not None:
                chains[part] = chain
                transposed += [f"{part}.{prefix}weight" for prefix, layer in chain[0] if isinstance(layer, nn.Linear)]
        super().__init__(members, streams, names, transposed)
        self._chains = chains
        self.likelihood = first.likelihood
        # parameterless copies on the meta device: the structure that functional_call fills with a member's tensors
        self._skeleton = {part: copy.deepcopy(getattr(first, part)).to("meta") for part in _STACKED_PARTS
                          if part not in self._chains}
        self._encode_fn, self._reconstruct_fn = self._encode, self._reconstruct

    def compile_networks(self, **options) -> None:
        """Run the stacked networks compiled, ``torch.compile(**options)`` (``mode="reduce-overhead"``: CUDA graphs
        on a GPU): the encoder with the head, and the decoder with the likelihood. The members' draws stay eager:
        each comes from its member's stream, and switching streams is a host-side step, which a graph does not
        hold. The parameters and the state dict are unchanged."""
        self._encode_fn = torch.compile(self._encode, **options)
        self._reconstruct_fn = torch.compile(self._reconstruct, **options)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_part("head", self._run_part("encoder", x))  # (K, B, raw_size)

    def _reconstruct(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) of every member's rows, ``(K, B)``: the likelihood is per data point, so the members' rows
        are scored as one batch."""
        params = self._run_part("decoder", z)
        return self.likelihood.log_prob(x.flatten(0, 1), params.flatten(0, 1)).view(self.k, -1)

    def _run_part(self, part: str, x: torch.Tensor) -> torch.Tensor:
        """``part`` of every member on its own slice of ``x`` (``(K, ...)``): a chain of linear layers as batched
        products, any other network as one vmapped computation."""
        if part in self._chains:
            return self._run_chain(part, x)
        skeleton = self._skeleton[part]
        params = {name.split(".", 1)[1]: self.stacked(name) for name in self._names if name.startswith(part + ".")}
        return torch.vmap(lambda p, xi: functional_call(skeleton, p, (xi,)))(params, x)

    def _run_chain(self, part: str, x: torch.Tensor) -> torch.Tensor:
        layers, flatten = self._chains[part]
        h = x.flatten(2) if flatten else x
        lead = h.shape[:-1]
        h = h.reshape(self.k, -1, h.shape[-1])
        for prefix, layer in layers:
            if isinstance(layer, nn.Linear):  # the weight stacked as (K, in, out): x @ W reads it as it lies
                weight = self.stacked(f"{part}.{prefix}weight")
                h = torch.bmm(h, weight) if layer.bias is None else \
                    torch.baddbmm(self.stacked(f"{part}.{prefix}bias").unsqueeze(1), h, weight)
            else:  # an elementwise activation: the same on the stacked tensor
                h = layer(h)
        return h.reshape(*lead, h.shape[-1])

    def forward(self, x: torch.Tensor) -> StackedELBOTerms:
        """ELBO terms of the stacked batch ``x`` (``(K, B, ...)``): member i's batch is ``x[i]``."""
        if x.shape[0] != self.k:
            raise ValueError(f"x: a stacked batch has the members on its first axis ({self.k}), got {tuple(x.shape)}")
        raw = self._encode_fn(x)
        posteriors = [self.latent.posterior(r) for r in raw.unbind(0)]
        samples = []
        for i, q in enumerate(posteriors):  # each member's draw from its own stream, as its separate run draws it
            with self.streams.member(i):
                samples.append(self.latent.rsample(q))
        reconstruction = self._reconstruct_fn(x, torch.stack([s.z for s in samples]))
        if self.latent.closed_form_kl:  # one evaluation for every member: the posterior of batch shape (K, B)
            kl = self.latent.kl(self.latent.posterior(raw))
        else:
            kl = torch.stack([self.latent.kl(q, sample) for q, sample in zip(posteriors, samples)])
        return StackedELBOTerms(reconstruction, kl, samples)
