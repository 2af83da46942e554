"""Link prediction on one graph: the edge split of Kipf and Welling's VGAE, and a full-batch data module.

Conventions: a graph has N nodes; node pairs are ``(2, k)`` long tensors of node indices. An undirected edge
is stored once, as the pair ``(i, j)`` with ``i < j``; self-loops are never edges of the split. The split:

- the undirected edges are shuffled and cut into test (``floor(test_fraction * E)``), validation
  (``floor(val_fraction * E)``) and training (the rest) edges, as ``mask_test_edges`` in Kipf's ``gae`` code
  does (10% and 5% there). An edge and its reverse are one pair, so they always land in the same split;
- validation and test get as many *non-edges* (pairs that are no edge of the full graph), drawn uniformly
  without replacement, disjoint between validation and test;
- the encoder passes messages over the training edges only (both directions).

The split is a function of the graph and the data module's ``seed`` alone, drawn once per run.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, fields

import pytorch_lightning as pl
import torch


@dataclass
class LinkSplit:
    """A graph with its link-prediction split. ``x``: node features ``(N, F)``; ``y``: node classes ``(N,)``
    (never used in training: only for plots); the rest are node pairs ``(2, k)`` with ``i < j``.

    The full graph's edge list is deliberately not kept: what the model can see is ``x`` and ``train_pos``.
    ``graphs``: the number of disjoint, equally large graphs it is (:meth:`join`), 1 for one graph.
    """

    x: torch.Tensor
    y: torch.Tensor
    train_pos: torch.Tensor
    val_pos: torch.Tensor
    val_neg: torch.Tensor
    test_pos: torch.Tensor
    test_neg: torch.Tensor
    graphs: int = 1
    #: derived tensors computed once per run (and per device) by :meth:`cached`
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def message_passing_edges(self) -> torch.Tensor:
        """The training edges in both directions, ``(2, 2 * E_train)``: all the encoder may propagate over."""
        return torch.cat([self.train_pos, self.train_pos.flip(0)], dim=1)

    def eval_pairs(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pairs (2, P + Q), labels (P + Q,))`` for ``stage`` in ``{"val", "test"}``: edges first, label 1."""
        if stage not in ("val", "test"):
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
        pos, neg = getattr(self, f"{stage}_pos"), getattr(self, f"{stage}_neg")
        labels = torch.cat([torch.ones(pos.shape[1], device=pos.device), torch.zeros(neg.shape[1], device=neg.device)])
        return torch.cat([pos, neg], dim=1), labels

    def fingerprint(self) -> str:
        """A digest of the split (node count and all pairs): equal digests, the same split."""
        digest = hashlib.sha1(str(self.num_nodes).encode())
        for name in ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg"):
            digest.update(getattr(self, name).detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def cached(self, key: Hashable, compute: Callable[[], torch.Tensor]):
        """``compute()`` once per graph object and ``key`` (a name, e.g. a model's normalised adjacency, or a tuple:
        :meth:`join`'s key is the joined graphs' ids)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "LinkSplit":
        """The split on ``device`` (``self`` when already there, so that the cache survives)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        moved = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_cache"}
        return LinkSplit(**{name: value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value
                            for name, value in moved.items()})

    @staticmethod
    def join(graphs: Sequence[LinkSplit]) -> LinkSplit:
        """The graphs (each one graph, with as many nodes and pairs of each kind) as one graph of ``len(graphs)``
        disjoint blocks, in order: graph g's node i is node ``g N + i``, its pairs of each kind (edges within its
        own block) follow graph g - 1's. The block-diagonal graph of a stack of link-prediction runs: what a
        model computes over it (messages over its edges, losses per graph: ``graphs``) is each graph's own. Built
        once for the same graphs (kept in the first one's cache)."""
        first = graphs[0]
        pairs = ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg")
        shapes = {(g.graphs, *g.x.shape, *(getattr(g, name).shape[1] for name in pairs)) for g in graphs}
        if len(shapes) != 1 or first.graphs != 1:
            raise ValueError(f"graphs: joined graphs are single graphs of equal sizes (graphs, nodes, features and "
                             f"pairs of each kind), got {sorted(shapes)}")
        n = first.num_nodes

        def build() -> LinkSplit:
            shifted = {name: torch.cat([getattr(g, name) + i * n for i, g in enumerate(graphs)], 1) for name in pairs}
            return LinkSplit(torch.cat([g.x for g in graphs]), torch.cat([g.y for g in graphs]), **shifted,
                             graphs=len(graphs))

        return first.cached(("join", *map(id, graphs)), build)


def undirected_edges(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The distinct undirected edges of ``edge_index`` as sorted pairs ``(i, j)``, ``i < j``; self-loops dropped."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
    lo, hi = edge_index.min(0).values, edge_index.max(0).values
    keep = lo != hi
    codes = torch.unique(lo[keep] * num_nodes + hi[keep])  # sorted, distinct
    return torch.stack([codes // num_nodes, codes % num_nodes])


def _first_occurrences(codes: torch.Tensor) -> torch.Tensor:
    """The distinct values of ``codes`` in the order of their first occurrence."""
    uniq, inverse = torch.unique(codes, return_inverse=True)
    first = torch.full((uniq.numel(),), codes.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(codes.numel()), reduce="amin")
    return codes[first.sort().values]


def sample_non_edges(edges: torch.Tensor, num_nodes: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct node pairs ``(2, count)``, ``i < j``, drawn uniformly from the pairs that are not in
    ``edges`` (undirected, ``i < j``) and are not self-loops."""
    available = num_nodes * (num_nodes - 1) // 2 - edges.shape[1]
    if count > available:
        raise ValueError(f"cannot draw {count} non-edges: the graph has only {available}")
    edge_codes = (edges[0] * num_nodes + edges[1]).sort().values
    chosen = torch.empty(0, dtype=torch.long)
    while chosen.numel() < count:
        # Uniform ordered pairs with i != j, sorted into (min, max), are uniform over unordered pairs.
        need = count - chosen.numel()
        draws = 2 * need + 64
        i = torch.randint(num_nodes, (draws,), generator=generator)
        j = torch.randint(num_nodes, (draws,), generator=generator)
        keep = i != j
        lo, hi = torch.minimum(i, j)[keep], torch.maximum(i, j)[keep]
        codes = lo * num_nodes + hi
        codes = codes[~torch.isin(codes, edge_codes) & ~torch.isin(codes, chosen)]
        chosen = torch.cat([chosen, _first_occurrences(codes)[:need]])
    return torch.stack([chosen // num_nodes, chosen % num_nodes])


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}"
        )


def split_sizes(num_edges: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """``(train, val, test)`` edge counts: ``floor`` of the fractions for val and test, the rest for training.

    (A tolerance of 1e-9 keeps binary rounding from turning e.g. 0.1 * 70 into 6.999...)
    """
    n_test = math.floor(test_fraction * num_edges + 1e-9)
    n_val = math.floor(val_fraction * num_edges + 1e-9)
    return num_edges - n_val - n_test, n_val, n_test


def split_edges(
    x: torch.Tensor,
    y: torch.Tensor,
    edge_index: torch.Tensor,
    val_fraction: float = 0.05,
    test_fraction: float = 0.10,
    seed: int = 0,
) -> LinkSplit:
    """Split a graph's undirected edges for link prediction (see the module docstring for the protocol).

    Args:
        x: node features ``(N, F)``.
        y: node classes ``(N,)`` (kept for plots only).
        edge_index: edges ``(2, E')`` in any orientation, duplicates and self-loops allowed.
        val_fraction, test_fraction: shares of the undirected edges held out (5% and 10% in the VGAE paper).
        seed: seed of the edge permutation and of the non-edge draws.
    """
    check_split_fractions(val_fraction, test_fraction)
    num_nodes = x.shape[0]
    edges = undirected_edges(edge_index, num_nodes)
    n_train, n_val, n_test = split_sizes(edges.shape[1], val_fraction, test_fraction)
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(
            f"the graph has {edges.shape[1]} undirected edges: too few for val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} (each split needs at least one edge)"
        )
    generator = torch.Generator().manual_seed(int(seed))
    order = edges[:, torch.randperm(edges.shape[1], generator=generator)]
    test_pos, val_pos, train_pos = order[:, :n_test], order[:, n_test : n_test + n_val], order[:, n_test + n_val :]
    negatives = sample_non_edges(edges, num_nodes, n_val + n_test, generator)
    return LinkSplit(
        x=x,
        y=y,
        train_pos=train_pos.contiguous(),
        val_pos=val_pos.contiguous(),
        val_neg=negatives[:, :n_val].contiguous(),
        test_pos=test_pos.contiguous(),
        test_neg=negatives[:, n_val:].contiguous(),
    )


class SingleGraphLoader:
    """A loader whose every epoch is one full-batch step over the whole graph."""

    def __init__(self, graph: LinkSplit):
        self.graph = graph

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[LinkSplit]:
        yield self.graph


class LinkPredictionDataModule(pl.LightningDataModule, abc.ABC):
    """Full-batch link prediction on one graph: subclasses implement :meth:`load_graph`.

    The split is computed once, in :meth:`setup`, and moved to the training device there; every loader
    (train, val, test) yields that one :class:`LinkSplit`.

    Args:
        val_fraction, test_fraction: shares of the undirected edges held out for validation and test.
        seed: seed of the split (the run's seed in the configs; ``dataset.seed`` as for the other data modules).
        normalize_features: divide each node's features by their sum (torch-geometric's example does;
            the VGAE paper uses the raw features).
    """

    #: number of node classes (for plots), known after :meth:`setup`
    num_classes: int | None = None

    def __init__(
        self,
        val_fraction: float = 0.05,
        test_fraction: float = 0.10,
        seed: int = 0,
        normalize_features: bool = False,
    ):
        super().__init__()
        check_split_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.seed = seed
        self.normalize_features = normalize_features
        self.graph: LinkSplit | None = None

    @abc.abstractmethod
    def load_graph(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x (N, F) float, edge_index (2, E') long, y (N,) long)`` on the CPU."""

    @property
    def num_features(self) -> int:
        """The size of a node's input: its feature count (what a model's first layer is built for)."""
        if self.graph is None:
            self.setup()
        return self.graph.num_features

    input_dim = num_features

    def setup(self, stage: str | None = None) -> None:
        if self.graph is None:
            x, edge_index, y = self.load_graph()
            x = x.float()
            if self.normalize_features:
                x = x / x.sum(1, keepdim=True).clamp_min(1.0)
            self.num_classes = int(y.max()) + 1 if y.numel() else 0
            self.graph = split_edges(x, y, edge_index, self.val_fraction, self.test_fraction, self.seed)
        if self.trainer is not None:
            self.graph = self.graph.to(self.trainer.strategy.root_device)

    def train_dataloader(self) -> SingleGraphLoader:
        if self.graph is None:
            self.setup()
        return SingleGraphLoader(self.graph)

    val_dataloader = test_dataloader = train_dataloader

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # The graph already lives on the training device (see setup); LinkSplit.to returns it unchanged,
        # keeping the models' cached derived tensors.
        return batch.to(device)
