"""The variational graph auto-encoder (Kipf and Welling, 2016) for any latent family, as a plain ``nn.Module``.

A two-layer GCN maps node features and the (training) graph to ``latent.raw_size`` numbers per node; the
latent family turns them into a posterior per node (Gaussian: the N-VGAE; vMF: the S-VGAE of Davidson et
al., 2018; spherical Cauchy; Power Spherical); an inner-product decoder scores node pairs.

Shapes: N nodes, F features; ``z`` is ``(N, event_size)`` (``event_size`` = d for Gaussian latents, d + 1 for
spherical ones, which live on S^d in R^(d+1)); node pairs are ``(2, k)`` long tensors.

The reconstruction loss of Kipf's own code (``gae/optimizer.py``) is a weighted binary cross-entropy over *all*
N^2 ordered node pairs of the training adjacency with self-loops, A_train + I:

    loss_rec = norm / N^2 * sum_ij [ w a_ij softplus(-l_ij) + (1 - a_ij) softplus(l_ij) ],
    w = (N^2 - E) / E,  norm = N^2 / (2 (N^2 - E)),  l_ij = <z_i, z_j> (times a scale for spherical z),

with E the number of ones of the training adjacency *without* self-loops (each undirected edge counted
twice), as in that code. The total loss adds the KL divided by N: ``loss_rec + mean_i KL_i / N``.
``reconstruction="sampled"`` is torch-geometric's recipe instead: the positive training edges against as many
uniformly drawn non-edges per step, for graphs whose N^2 pairs would take too long.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.distributions import Distribution
from torch.nn import functional as F

from hsvae.latents import LatentFamily, PosteriorSample

RECONSTRUCTION_CHOICES = ("all_pairs", "sampled")


# -- graph convolution ----------------------------------------------------------------------------------------


def gcn_normalized_adjacency(
    edge_index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """D^(-1/2) (A + I) D^(-1/2) as a sparse CSR ``(N, N)`` tensor, D the degrees of A + I (Kipf and Welling, 2017).

    ``edge_index`` ``(2, E)``: the directed edges of A (both directions of each undirected edge), without
    self-loops or duplicates.
    """
    loops = torch.arange(num_nodes, device=edge_index.device)
    row, col = torch.cat([edge_index[0], loops]), torch.cat([edge_index[1], loops])
    inv_sqrt = torch.bincount(row, minlength=num_nodes).to(dtype).rsqrt()  # (degrees: exact integers in any float)
    values = inv_sqrt[row] * inv_sqrt[col]
    adjacency = torch.sparse_coo_tensor(torch.stack([row, col]), values, (num_nodes, num_nodes), check_invariants=False)
    return _to_csr(adjacency.coalesce())


def _to_csr(x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmuls with a dense matrix are stable
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return x.to_sparse_csr()


def encoder_features(x: torch.Tensor, max_density: float = 0.5) -> torch.Tensor:
    """``x`` as a sparse CSR tensor when at most ``max_density`` of it is non-zero (bag-of-words features are
    about 1% non-zero: the first layer's product then costs ~1/100 of the dense one), else unchanged."""
    if x.layout != torch.strided or x.numel() == 0:
        return x
    density = float((x != 0).sum()) / x.numel()
    return _to_csr(x) if density <= max_density else x


class NodeMap(nn.Module):
    """``x @ weight (+ bias)``, node by node (either may be absent): a graph convolution's parts that act on each
    node alone (a stack of networks splits these per member; the propagation between nodes is shared)."""

    def __init__(self, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.weight = None if weight is None else nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.weight is None else x @ self.weight
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={tuple(p.shape)}" for name, p in self.named_parameters())


class GraphConvolution(nn.Module):
    """``adjacency @ (x @ W) (+ b)``, W Glorot-initialised as in Kipf's ``GraphConvolution`` layer (which has no
    bias); a bias, when asked for, starts uniform in +-1/sqrt(in_features) as ``nn.Linear``'s."""

    #: its output rows (nodes) mix through the adjacency; its parts ``linear`` and ``bias`` act node by node
    mixes_rows = True

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        bound = math.sqrt(6.0 / (in_features + out_features))
        self.linear = NodeMap(weight=torch.empty(in_features, out_features).uniform_(-bound, bound))
        limit = 1.0 / math.sqrt(in_features)
        self.bias = NodeMap(bias=torch.empty(out_features).uniform_(-limit, limit)) if bias else None

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = adjacency @ self.linear(x)
        return out if self.bias is None else self.bias(out)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # a checkpoint of the layer before its parts were modules of their own (weight, bias)
        for old, new in (("weight", "linear.weight"), ("bias", "bias.bias")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args)


class GCNEncoder(nn.Module):
    """Two graph convolutions with a ReLU between: ``(N, F) -> (N, hidden) -> (N, out_features)``; the second
    with a bias when ``output_bias``."""

    mixes_rows = True  # (its graph convolutions)

    def __init__(self, in_features: int, hidden: int, out_features: int, output_bias: bool = False):
        super().__init__()
        self.conv1 = GraphConvolution(in_features, hidden)
        self.conv2 = GraphConvolution(hidden, out_features, bias=output_bias)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x, adjacency)), adjacency)


class LogitScale(nn.Module):
    """``z -> sqrt(scale) z``, node by node: the inner product of two scaled points is the decoder's logit
    ``scale * <z_i, z_j>``. ``log_scale`` is a parameter when learnt, else a buffer."""

    def __init__(self, init_scale: float, learn: bool):
        super().__init__()
        log_scale = torch.tensor(math.log(init_scale))
        if learn:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.log_scale.exp().sqrt()  # (exp then sqrt: the rounding the all-pairs loss always had)


# -- reconstruction losses ------------------------------------------------------------------------------------


class _AllPairsBCESum(torch.autograd.Function):
    """sum_ij softplus(l_ij) + sum_(i,j) in P [w softplus(-l_ij) - softplus(l_ij)], l = z z^T (all N^2 pairs).

    The same value as the weighted BCE summed over all pairs with targets 1 on P (a symmetric set of pairs),
    written so that the N^2 part needs no targets. The gradient is formed in the same pass: dloss/dl =
    sigmoid(l) on every pair, minus (w sigmoid(-l) + sigmoid(l)) on P. With a symmetric P this matrix G is
    symmetric, so dloss/dz = (G + G^T) z = 2 G z, and only the blocks on and above the diagonal are computed:
    rows [s, s + b) against columns [s, N), the part right of the diagonal block counted twice and its
    transpose added to the later rows' gradient. Memory: one ``(b, N)`` block instead of autograd's several
    N^2 buffers; time: half the pairs and cache-sized blocks, about 3x faster than autograd on a CPU.

    With ``row_sums``, also returns the per-row sums of the pair losses ``(N,)`` (not differentiable).
    """

    @staticmethod
    def forward(ctx, z, rows, cols, pos_weight: float, block_rows: int, row_sums: bool):
        n = z.shape[0]
        need_grad = ctx.needs_input_grad[0]
        total = torch.zeros((), dtype=torch.float64, device=z.device)
        grad = torch.zeros_like(z) if need_grad else None
        per_row = torch.zeros(n, dtype=torch.float64, device=z.device) if row_sums else None
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            z_rows, z_cols = z[start:stop], z[start:]
            logits = z_rows @ z_cols.T  # (b, N - start): the diagonal block, then the pairs right of it
            terms = F.softplus(logits)
            b = stop - start
            total += terms[:, :b].sum(dtype=torch.float64) + 2.0 * terms[:, b:].sum(dtype=torch.float64)
            if row_sums:
                per_row[start:stop] += terms.sum(1, dtype=torch.float64)
                per_row[stop:] += terms[:, b:].sum(0, dtype=torch.float64)
            if need_grad:
                g = torch.sigmoid_(logits)
                grad[start:stop] += g @ z_cols
                grad[stop:] += g[:, b:].T @ z_rows
        pos = (z[rows] * z[cols]).sum(-1)
        correction = pos_weight * F.softplus(-pos) - F.softplus(pos)
        total += correction.sum(dtype=torch.float64)
        if row_sums:
            per_row.index_add_(0, rows, correction.double())
        if need_grad:
            coefficient = -(pos_weight * torch.sigmoid(-pos) + torch.sigmoid(pos))
            grad.index_add_(0, rows, coefficient.unsqueeze(-1) * z[cols])
            ctx.save_for_backward(grad.mul_(2.0))
        if not row_sums:
            return total.to(z.dtype)
        per_row = per_row.to(z.dtype)
        ctx.mark_non_differentiable(per_row)
        return total.to(z.dtype), per_row

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, *unused):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None, None, None, None


def all_pairs_reconstruction_loss(
    z: torch.Tensor, train_pos: torch.Tensor, block_rows: int = 256, per_node: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Kipf's weighted cross-entropy over all N^2 pairs of A_train + I (see the module docstring).

    Args:
        z: ``(N, k)``; the logit of pair (i, j) is ``<z_i, z_j>`` (fold any decoder scale into z).
        train_pos: the training edges ``(2, E_train)``, each undirected edge once, no self-loops.
        block_rows: pair logits are computed ``block_rows`` rows at a time (memory ``block_rows * N`` floats).
        per_node: also return, for each node i, the part of the loss that depends on z_i (the pairs (i, j) and
            (j, i) for all j; detached, shape ``(N,)``).
    """
    n = z.shape[0]
    ones = 2 * train_pos.shape[1]  # E: the ones of the training adjacency, self-loops excluded
    if ones == 0:
        raise ValueError("all_pairs_reconstruction_loss: the training graph has no edges")
    pos_weight = (n * n - ones) / ones
    scale = n * n / (2.0 * (n * n - ones)) / (n * n)  # Kipf's norm, over the mean's N^2
    loops = torch.arange(n, device=z.device)
    rows = torch.cat([train_pos[0], train_pos[1], loops])
    cols = torch.cat([train_pos[1], train_pos[0], loops])
    if not per_node:
        return scale * _AllPairsBCESum.apply(z, rows, cols, pos_weight, block_rows, False)
    total, row_sums = _AllPairsBCESum.apply(z, rows, cols, pos_weight, block_rows, True)
    # row i and column i (the same by symmetry), less the diagonal pair counted in both (label 1: w softplus(-l))
    diagonal = pos_weight * F.softplus(-(z.detach() * z.detach()).sum(-1))
    return scale * total, scale * (2.0 * row_sums - diagonal)


def sample_pairs(num_nodes: int, count: int, exclude: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """``count`` uniform node pairs ``(2, k)`` with i != j (from the global RNG), minus those in ``exclude``
    (undirected pairs, i < j); k is ``count`` less the few excluded draws (a share ~ the graph's density)."""
    i = torch.randint(num_nodes, (count,), device=device)
    j = torch.randint(num_nodes - 1, (count,), device=device)
    j = j + (j >= i).long()  # uniform over j != i
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    if exclude is not None and exclude.numel():
        keep = ~torch.isin(lo * num_nodes + hi, exclude[0] * num_nodes + exclude[1])
        lo, hi = lo[keep], hi[keep]
    return torch.stack([lo, hi])


def pair_logits(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``<z_i, z_j>`` for each pair of ``pairs`` ``(2, k)``; shape ``(k,)``."""
    return (z[pairs[0]] * z[pairs[1]]).sum(-1)


def pair_reconstruction_loss(
    z: torch.Tensor,
    train_pos: torch.Tensor,
    reconstruction: str = "all_pairs",
    negatives_per_positive: int = 1,
    block_rows: int = 256,
    per_node: bool = False,
    graphs: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The inner-product decoder's loss of ``z`` ``(N, k)`` (scaled: the logit of a pair is ``<z_i, z_j>``; see
    :class:`VGAE` for the arguments): ``(loss, per-node loss terms or None)``; ``"sampled"`` draws its non-edges
    from the global RNG. ``graphs`` > 1: ``z`` and ``train_pos`` are a batch of that many disjoint graphs of equally
    many nodes and training edges (graph g: nodes ``[g n, (g + 1) n)``, edges ``[g e, (g + 1) e)``), and the loss
    is the mean of theirs (no pair between two graphs is a pair of either)."""
    if graphs > 1:
        n, e = z.shape[0] // graphs, train_pos.shape[1] // graphs
        parts = [pair_reconstruction_loss(z[g * n:(g + 1) * n], train_pos[:, g * e:(g + 1) * e] - g * n,
                                          reconstruction, negatives_per_positive, block_rows, per_node)
                 for g in range(graphs)]
        loss = torch.stack([loss for loss, _ in parts]).mean()
        return loss, torch.cat([node for _, node in parts]) / graphs if per_node else None
    if reconstruction == "all_pairs":
        out = all_pairs_reconstruction_loss(z, train_pos, block_rows, per_node)
        return out if per_node else (out, None)
    negatives = sample_pairs(z.shape[0], negatives_per_positive * train_pos.shape[1], train_pos, z.device)
    pos_terms = F.softplus(-pair_logits(z, train_pos)) / train_pos.shape[1]
    neg_terms = F.softplus(pair_logits(z, negatives)) / max(negatives.shape[1], 1)
    loss = pos_terms.sum() + neg_terms.sum()
    if not per_node:
        return loss, None
    node = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    for pairs, terms in ((train_pos, pos_terms.detach()), (negatives, neg_terms.detach())):
        node.index_add_(0, pairs[0], terms).index_add_(0, pairs[1], terms)
    return loss, node


# -- the model ----------------------------------------------------------------------------------------------


@dataclass
class VGAETerms:
    """One training evaluation: the reconstruction loss (a scalar), the KL per node ``(N,)``, the draw and its
    estimator, and per node i the part of the reconstruction loss that depends on z_i (only when the latent's
    estimator uses it: ``sample.needs_per_draw_terms``); ``graphs``: the number of equally large graphs the nodes
    are (the loss is the mean of theirs)."""

    reconstruction: torch.Tensor
    kl: torch.Tensor
    sample: PosteriorSample
    posterior: Distribution
    node_reconstruction: torch.Tensor | None = None
    graphs: int = 1

    @property
    def z(self) -> torch.Tensor:
        return self.sample.z

    def loss(self) -> torch.Tensor:
        """reconstruction + mean KL / N (Kipf's weighting), with the latent's gradient estimator (same value).

        The estimator gets each node's own part of the loss: with the whole loss for every node, the vMF's
        correction term is too noisy to train on (about 79 test AUC on Cora instead of 93)."""
        reconstruction = self.sample.surrogate(self.reconstruction, self.node_reconstruction)
        return reconstruction + self.kl.mean() / (self.kl.shape[0] // self.graphs)  # (N: one graph's nodes)


class VGAE(nn.Module):
    """GCN encoder -> latent family (per node) -> inner-product decoder.

    Args:
        in_features: node feature size F.
        latent: the latent family (``latent.dim`` = d; the encoder outputs ``latent.raw_size`` per node).
        hidden: width of the first graph convolution (32 in the VGAE paper).
        reconstruction: ``"all_pairs"`` (Kipf's loss over all N^2 pairs) or ``"sampled"`` (the training edges
            against ``negatives_per_positive`` uniformly drawn non-edges each, per step).
        negatives_per_positive: for ``"sampled"``.
        learn_scale: score pairs by ``scale * <z_i, z_j>`` with a learnable scale (default: for spherical
            latents, whose unit vectors would otherwise give logits in [-1, 1]; the S-VAE authors' advice).
        init_scale: the scale's initial value (> 0); 1 and fixed when not learnt.
        output_bias: a bias in the encoder's last layer (default: for spherical latents). Without one, a node
            whose features are all zero and that has no training edge (CiteSeer has such nodes) gets the raw
            output 0, and a spherical latent's direction 0/0; Gaussian latents follow Kipf's bias-free layers.
        block_rows: rows of pair logits the all-pairs loss computes at once (memory ``block_rows * N`` floats;
            256 rows keep a block in a CPU's cache for graphs of a few thousand nodes).
    """

    def __init__(
        self,
        in_features: int,
        latent: LatentFamily,
        hidden: int = 32,
        reconstruction: str = "all_pairs",
        negatives_per_positive: int = 1,
        learn_scale: bool | None = None,
        init_scale: float = 1.0,
        output_bias: bool | None = None,
        block_rows: int = 256,
    ):
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("block_rows", block_rows)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if reconstruction not in RECONSTRUCTION_CHOICES:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTION_CHOICES}, got {reconstruction!r}"
            )
        if not isinstance(negatives_per_positive, int) or negatives_per_positive < 1:
            raise ValueError(
                f"negatives_per_positive must be a positive integer, got {negatives_per_positive!r}"
            )
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.in_features = in_features
        self.latent = latent
        on_spheres = bool(latent.spheres)
        output_bias = on_spheres if output_bias is None else output_bias
        self.encoder = GCNEncoder(in_features, hidden, latent.raw_size, output_bias)
        self.reconstruction = reconstruction
        self.negatives_per_positive = negatives_per_positive
        self.block_rows = block_rows
        self.decoder = LogitScale(init_scale, on_spheres if learn_scale is None else learn_scale)

    @property
    def scale(self) -> torch.Tensor:
        """The decoder's logit scale (learnable for spherical latents by default)."""
        return self.decoder.log_scale.exp()

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # a checkpoint of the model before its scale was a module of its own
        if prefix + "log_scale" in state_dict:
            state_dict[prefix + "decoder.log_scale"] = state_dict.pop(prefix + "log_scale")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def posterior(self, x: torch.Tensor, adjacency: torch.Tensor) -> Distribution:
        """q(z_i | X, A) for every node (batch shape ``(N,)``); ``adjacency`` from :func:`gcn_normalized_adjacency`."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"VGAE built for {self.in_features} node features, got x with {x.shape[-1]}")
        return self.latent.posterior(self.encoder(x, adjacency))

    def embed(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """Point embedding of every node (the posterior's location), ``(N, event_size)``."""
        return self.latent.point(self.posterior(x, adjacency))

    def logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``scale * <z_i, z_j>`` for each pair of ``pairs`` ``(2, k)``; shape ``(k,)``."""
        return pair_logits(self.decoder(z), pairs)

    def reconstruction_loss(
        self, z: torch.Tensor, train_pos: torch.Tensor, per_node: bool = False, graphs: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(loss, per-node loss terms or None)``; see :func:`all_pairs_reconstruction_loss` for ``per_node`` and
        :func:`pair_reconstruction_loss` for ``graphs``."""
        return pair_reconstruction_loss(self.decoder(z), train_pos, self.reconstruction, self.negatives_per_positive,
                                        self.block_rows, per_node, graphs)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor, train_pos: torch.Tensor, graphs: int = 1) -> VGAETerms:
        """Loss terms of one full-batch step; ``train_pos`` ``(2, E_train)``: the training edges, i < j; ``graphs``:
        the number of disjoint, equally large graphs the nodes and edges are, in order (the loss is their mean)."""
        q = self.posterior(x, adjacency)
        sample = self.latent.rsample(q)
        reconstruction, per_node = self.reconstruction_loss(sample.z, train_pos, sample.needs_per_draw_terms, graphs)
        return VGAETerms(reconstruction, self.latent.kl(q, sample), sample, q, per_node, graphs)

