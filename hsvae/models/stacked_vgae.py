"""K independent VGAEs trained as one computation: a link-prediction cell's seeds in one process.

A link-prediction member differs from the others in its edge split (drawn with its seed): its encoder passes
messages over its own training edges. The stack passes every member's messages in one sparse product with the
block-diagonal matrix of the members' normalised adjacencies (block i is member i's ``D^(-1/2) (A_i + I)
D^(-1/2)``, exactly the matrix its separate run builds); the members share the node features, so the first
layer's feature product is one sparse product with the members' weights side by side. Each member's posterior
draw and (for ``reconstruction="sampled"``) its non-edges come from its own random stream
(:class:`~hsvae.models.stacked.MemberStreams`), in the order its separate run draws them, and its reconstruction
loss is its separate run's, over its own training edges: member i of a stack and a separate run with its seed
give the same losses, gradients and parameters.

Dimension convention: N nodes, F features; the stacked encoder output is ``(K, N, raw_size)`` and the stacked
embedding ``(K, N, event_size)``; member i's view is ``[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .stacked import MemberStack, MemberStreams
from .vgae import VGAE, VGAETerms, gcn_normalized_adjacency, pair_logits, pair_reconstruction_loss


def block_diagonal_adjacency(message_edges: Sequence[torch.Tensor], num_nodes: int,
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The block-diagonal ``(K N, K N)`` sparse matrix whose block i is :func:`gcn_normalized_adjacency` of
    member i's message-passing edges ``(2, E_i)`` (node j of member i is row ``i N + j``)."""
    shifted = [edges + i * num_nodes for i, edges in enumerate(message_edges)]
    return gcn_normalized_adjacency(torch.cat(shifted, dim=1), len(message_edges) * num_nodes, dtype)


class StackedVGAE(MemberStack):
    """K VGAEs of one architecture as one module (see the module docstring).

    Args:
        members: the K VGAEs, each built (and initialised) as a separate run would build it.
        streams: each member's random stream at the start.
    """

    def __init__(self, members: Sequence[VGAE], streams: MemberStreams):
        first = members[0] if members else None
        names = [] if first is None else [n for n in first.state_dict() if not n.startswith("latent.")]
        super().__init__(members, streams, names)
        self.in_features = first.in_features
        self.reconstruction = first.reconstruction
        self.negatives_per_positive = first.negatives_per_positive
        self.block_rows = first.block_rows
        self._output_bias = first.encoder.conv2.bias is not None

    @property
    def scale(self) -> torch.Tensor:
        """Every member's decoder logit scale, ``(K,)``."""
        return self.stacked("log_scale").exp()

    def encode(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """The members' GCN outputs ``(K, N, raw_size)`` for the shared features ``x`` ``(N, F)`` (dense or sparse
        CSR) and the members' block-diagonal adjacency (:func:`block_diagonal_adjacency`)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"VGAE built for {self.in_features} node features, got x with {x.shape[-1]}")
        n, k = x.shape[0], self.k
        w1, w2 = self.stacked("encoder.conv1.weight"), self.stacked("encoder.conv2.weight")  # (K, F, H), (K, H, O)
        hidden_size, out_size = w1.shape[-1], w2.shape[-1]
        # X W_i for every member at once: the weights side by side, one product with the (sparse) features
        features = (x @ w1.transpose(0, 1).reshape(x.shape[-1], k * hidden_size)).view(n, k, hidden_size)
        hidden = F.relu(adjacency @ features.transpose(0, 1).reshape(k * n, hidden_size)).view(k, n, hidden_size)
        out = (adjacency @ torch.bmm(hidden, w2).view(k * n, out_size)).view(k, n, out_size)
        return out + self.stacked("encoder.conv2.bias").unsqueeze(1) if self._output_bias else out

    def embed(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """Every member's point embedding of every node (its posterior's location), ``(K, N, event_size)``."""
        return self.latent.point(self.latent.posterior(self.encode(x, adjacency)))

    def logits(self, i: int, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Member i's pair logits ``scale_i * <z_a, z_b>`` for ``pairs`` ``(2, P)`` of its embedding ``z``."""
        return pair_logits(z, pairs, self.scale[i])

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor, train_pos: Sequence[torch.Tensor]) -> list[VGAETerms]:
        """Each member's loss terms of one full-batch step; ``train_pos[i]``: member i's training edges."""
        if len(train_pos) != self.k:
            raise ValueError(f"train_pos: {len(train_pos)} members' training edges for a stack of {self.k}")
        raw = self.encode(x, adjacency)
        scale = self.scale
        draws = []
        for i in range(self.k):  # in a separate run's order, from member i's stream: the draw, then any non-edges
            q = self.latent.posterior(raw[i])
            with self.streams.member(i):
                sample = self.latent.rsample(q)
                reconstruction, per_node = pair_reconstruction_loss(
                    sample.z, scale[i], train_pos[i], self.reconstruction, self.negatives_per_positive,
                    self.block_rows, per_node=sample.needs_per_draw_terms)
            draws.append((q, sample, reconstruction, per_node))
        if self.latent.closed_form_kl:  # one evaluation for every member: the posterior of batch shape (K, N)
            kl = self.latent.kl(self.latent.posterior(raw)).unbind(0)
        else:
            kl = [self.latent.kl(q, sample) for q, sample, *_ in draws]
        return [VGAETerms(rec, kl_i, sample, q, per_node) for (q, sample, rec, per_node), kl_i in zip(draws, kl)]
