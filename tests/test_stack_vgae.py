"""The stack of link-prediction runs (issue 25): the members' graphs as one block-diagonal graph
(:meth:`LinkSplit.join`), the VGAE's unchanged training step on it, each member's GCN parts its own.

Exact where nothing is random: on fixed noise, K times the stacked loss is the sum of the members' separate models'
losses, and its gradient in member i's parameters is member i's own. Through the CLI: ``seeds=[0,1,2]`` on a graph
writes three runs that make_tables reads.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch

from hsvae.cli.registry import build_latent
from hsvae.data.links import LinkSplit
from hsvae.latents import PosteriorSample
from hsvae.latents.base import LatentFamily
from hsvae.models import VGAE
from hsvae.models.vgae import encoder_features, gcn_normalized_adjacency
from hsvae.stack import MemberSplit, StackedTask
from hsvae.training import LinkPredictionModule
from tests.conftest import FAST
from tests.test_link_prediction_data import write_planetoid_fixture
from tests.test_link_prediction_model import random_graph

N, FEATURES, K = 40, 12, 3


@pytest.fixture(autouse=True)
def no_validation(monkeypatch):
    monkeypatch.setattr(torch.distributions.Distribution, "_validate_args", False)


def _graph(seed: int) -> LinkSplit:
    """A member's graph: its own edges and split, bag-of-words-like features (sparse: the features go in as CSR)."""
    edges = random_graph(N, 150, seed)[:, :100]  # (equally many pairs of each kind in every member)
    x = (torch.rand(N, FEATURES, generator=torch.Generator().manual_seed(seed)) < 0.2).float()
    return LinkSplit(x, torch.zeros(N, dtype=torch.long), edges[:, 20:], edges[:, :5], edges[:, 5:10],
                     edges[:, 10:15], edges[:, 15:20])


def _task(latent: str, seed: int, reconstruction: str = "all_pairs") -> LinkPredictionModule:
    torch.manual_seed(seed)
    net = VGAE(FEATURES, build_latent(latent, 3), hidden=8, reconstruction=reconstruction)
    return LinkPredictionModule(net, functools.partial(torch.optim.Adam, lr=1e-2))


def _fixed_noise(self, q, sample_shape=()):
    """A draw fixed by the posterior alone (its mean), with a zero-valued score that has a gradient: the loss's
    per-node terms (the vMF correction's path) are exercised."""
    z = q.mean
    score = z.sum(-1) - z.sum(-1).detach()
    return PosteriorSample(z, score)


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_a_stacked_vgae_on_fixed_noise_is_its_members_models(latent, monkeypatch):
    """K times the loss of the task's step on the block-diagonal graph is the sum of the members' separate models'
    losses on their own graphs, and its gradient in member i's stacked parameters (GCN weights, bias, decoder
    scale) is member i's own; member i alone on its own graph is its model exactly."""
    monkeypatch.setattr(LatentFamily, "rsample", _fixed_noise)
    graphs = [_graph(seed) for seed in range(K)]
    tasks = [_task(latent, seed) for seed in range(K)]
    stack = StackedTask(tasks)
    # (the Gaussian's decoder scale is fixed, a buffer: shared; a spherical latent's is learnt, and a bias added)
    assert set(stack.splits) == {"encoder.conv1.linear", "encoder.conv2.linear"} | (
        {"encoder.conv2.bias", "decoder"} if latent == "vmf" else set())
    expected = []
    for task, graph in zip(tasks, graphs):
        x, adjacency = encoder_features(graph.x), gcn_normalized_adjacency(graph.message_passing_edges(), N)
        assert x.layout == torch.sparse_csr
        loss = task.net(x, adjacency, graph.train_pos).loss()
        loss.backward()
        expected.append(loss.detach())
    stacked = stack.training_step(graphs, 0)
    torch.testing.assert_close(stacked, torch.stack(expected).sum(), rtol=1e-5, atol=1e-6)
    stacked.backward()
    for i, task in enumerate(tasks):
        for name, value in task.net.named_parameters():
            part, leaf = name.rsplit(".", 1)
            torch.testing.assert_close(stack.splits[part].stacked()[leaf].grad[i], value.grad, rtol=1e-4, atol=1e-6,
                                       msg=name)
    for i, (task, graph) in enumerate(zip(tasks, graphs)):  # member i alone, on its own graph
        inputs = (encoder_features(graph.x), gcn_normalized_adjacency(graph.message_passing_edges(), N))
        with stack.only(i):
            assert torch.equal(stack.task.net(*inputs, graph.train_pos).loss(), expected[i])
    assert isinstance(stack.task.net.encoder.conv1.linear, MemberSplit)


def test_the_block_diagonal_graph_keeps_each_members_pairs_in_its_block():
    graphs = [_graph(seed) for seed in range(K)]
    joined = LinkSplit.join(graphs)
    assert joined.graphs == K and joined.num_nodes == K * N and LinkSplit.join(graphs) is joined  # (built once)
    for name in ("train_pos", "val_pos", "val_neg", "test_pos", "test_neg"):
        blocks = getattr(joined, name).unflatten(1, (K, -1))
        for i, graph in enumerate(graphs):
            assert torch.equal(blocks[:, i] - i * N, getattr(graph, name)), name
    adjacency = gcn_normalized_adjacency(joined.message_passing_edges(), K * N).to_dense()
    for i, graph in enumerate(graphs):  # block i is member i's normalised adjacency; nothing between blocks
        block = gcn_normalized_adjacency(graph.message_passing_edges(), N).to_dense()
        assert torch.equal(adjacency[i * N:(i + 1) * N, i * N:(i + 1) * N], block)
    assert adjacency.abs().sum() == sum(gcn_normalized_adjacency(g.message_passing_edges(), N).to_dense().abs().sum()
                                        for g in graphs)
    small = LinkSplit(*(getattr(graphs[1], name)[:, :-1] if name.endswith(("pos", "neg")) else getattr(graphs[1], name)
                        for name in ("x", "y", "train_pos", "val_pos", "val_neg", "test_pos", "test_neg")))
    with pytest.raises(ValueError, match="^graphs: joined graphs are single graphs of equal sizes"):
        LinkSplit.join([graphs[0], small])


def test_the_sampled_loss_of_a_batch_of_graphs_is_their_mean():
    """``reconstruction="sampled"``: each graph's non-edges are drawn within it, its loss its own."""
    graphs = [_graph(seed) for seed in range(K)]
    joined = LinkSplit.join(graphs)
    net = VGAE(FEATURES, build_latent("gaussian", 3), hidden=8, reconstruction="sampled")
    z = torch.randn(K * N, 3)
    torch.manual_seed(4)
    loss, node = net.reconstruction_loss(z, joined.train_pos, per_node=True, graphs=K)
    torch.manual_seed(4)
    parts = [net.reconstruction_loss(z[i * N:(i + 1) * N], g.train_pos, per_node=True) for i, g in enumerate(graphs)]
    torch.testing.assert_close(loss, torch.stack([p[0] for p in parts]).mean())
    torch.testing.assert_close(node, torch.cat([p[1] for p in parts]) / K)


def test_a_checkpoint_of_the_earlier_layout_loads():
    """Checkpoints written before the GCN's linear maps, bias and decoder scale were modules of their own load."""
    net = VGAE(FEATURES, build_latent("vmf", 3), hidden=8)
    renamed = {"linear.weight": "weight", "bias.bias": "bias", "decoder.log_scale": "log_scale"}
    old = {functools.reduce(lambda k, r: k.replace(*r), renamed.items(), k): v for k, v in net.state_dict().items()}
    assert "log_scale" in old and "encoder.conv1.weight" in old and "encoder.conv2.bias" in old
    fresh = VGAE(FEATURES, build_latent("vmf", 3), hidden=8)
    fresh.load_state_dict({k: v + 1 for k, v in old.items()})
    assert all(torch.equal(fresh.state_dict()[k], v + 1) for k, v in net.state_dict().items())


def test_seeds_on_a_link_task_writes_runs_that_tables_read(compose_train, tmp_path):
    """``seeds=[0,1,2]`` on a graph: three run folders, each with a separate run's keys (its train/ metrics as the
    stack's), its own test AUC/AP and best epoch; make_tables reads them as three runs."""
    from hsvae.analysis.tables import find_jobs
    from hsvae.cli.train import train

    write_planetoid_fixture(tmp_path / "data", features=12)
    common = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv", *FAST,
              "dataset=pubmed", "dataset.verify=false", "latent=vmf", "trainer.max_epochs=3"]
    mean = train(compose_train([*common, "seeds=[0,1,2]"], "stack"))
    separate = train(compose_train([*common, "seed=1"], "one"))
    members = {s: json.loads((tmp_path / "stack" / f"seed_{s}" / "results.json").read_text()) for s in (0, 1, 2)}
    for seed, results in members.items():
        assert results["seed"] == seed and results["config"]["seed"] == seed
        assert set(results["metrics"]) == {f"stack/{k}" if k.startswith("train/") else k for k in separate}
        assert results["metrics"]["best/epoch"] == results["stack"]["best_epoch"]
    assert len({m["metrics"]["test/auc"] for m in members.values()}) == 3
    assert mean["test/auc"] == pytest.approx(sum(m["metrics"]["test/auc"] for m in members.values()) / 3)
    jobs = find_jobs([tmp_path / "stack"])
    assert sorted(j.results["seed"] for j in jobs) == [0, 1, 2] and all(j.problem is None for j in jobs)
