"""Stacked link-prediction runs (hsvae.models.stacked_vgae, issue 16): K VGAEs, each on its own edge split, as
one computation.

With the same seeds, member i of a stack and a separate VGAE i (its own split, its own initialisation and draws)
give the same losses and parameters after several Adam steps, for every latent family and both reconstruction
losses; ``seeds=[0,1]`` on train.py writes each member's run with its separate run's numbers; the stacked step
reads nothing back to the host.
"""

from __future__ import annotations

import json

import pytest
import torch

from hsvae.cli.registry import build_latent, latent_families
from hsvae.data.links import LinkSplit, split_edges
from hsvae.models.stacked import MemberStreams
from hsvae.models.stacked_vgae import StackedVGAE, block_diagonal_adjacency
from hsvae.models.vgae import VGAE, encoder_features, gcn_normalized_adjacency
from tests.conftest import FAST
from tests.test_link_prediction_data import write_planetoid_fixture

NODES, FEATURES, STEPS = 80, 20, 3


pytestmark = pytest.mark.usefixtures("no_argument_validation")


def _graph() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(NODES, FEATURES, generator=g) < 0.15).float(), torch.randint(NODES, (2, 300), generator=g)


def _member(latent: str, reconstruction: str, seed: int) -> tuple[VGAE, torch.Tensor]:
    """A VGAE built as a separate run builds it after seeding, and the generator state it starts training at."""
    torch.manual_seed(seed)
    return VGAE(FEATURES, build_latent(latent, 3), hidden=8, reconstruction=reconstruction), torch.get_rng_state()


def _separate_run(net: VGAE, state: torch.Tensor, split: LinkSplit) -> list[float]:
    torch.set_rng_state(state)
    adjacency = gcn_normalized_adjacency(split.message_passing_edges(), NODES)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(STEPS):
        loss = net(encoder_features(split.x), adjacency, split.train_pos).loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("reconstruction", ["all_pairs", "sampled"])
@pytest.mark.parametrize("latent", latent_families())
def test_member_i_of_a_vgae_stack_is_the_separate_vgae_i(latent, reconstruction):
    """Each member on its own edge split (drawn with its seed): its draws (and sampled non-edges) from its own
    stream, messages over its own training edges through the block-diagonal adjacency."""
    x, edges = _graph()
    seeds = [0, 1, 5]
    splits = [split_edges(x, torch.zeros(NODES, dtype=torch.long), edges, seed=s) for s in seeds]
    separate = []
    for seed, split in zip(seeds, splits):
        net, state = _member(latent, reconstruction, seed)
        separate.append((net, _separate_run(net, state, split)))
    members = [_member(latent, reconstruction, seed) for seed in seeds]
    stack = StackedVGAE([m for m, _ in members], MemberStreams([s for _, s in members]))
    adjacency = block_diagonal_adjacency([s.message_passing_edges() for s in splits], NODES)
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-2)
    stacked = []
    for _ in range(STEPS):
        losses = torch.stack([t.loss() for t in stack(encoder_features(x), adjacency, [s.train_pos for s in splits])])
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
        stacked.append(losses.tolist())
    for i, (net, losses) in enumerate(separate):
        assert [step[i] for step in stacked] == pytest.approx(losses, rel=1e-5, abs=1e-6), i
        state = {k: v for k, v in net.state_dict().items() if not k.startswith("latent.")}
        assert set(stack.member(i)) == set(state)
        for name, value in stack.member(i).items():
            torch.testing.assert_close(value, state[name], rtol=1e-4, atol=1e-5)
        # the embedding of member i is its separate model's
        torch.testing.assert_close(
            stack.embed(encoder_features(x), adjacency)[i],
            net.embed(encoder_features(x), gcn_normalized_adjacency(splits[i].message_passing_edges(), NODES)),
            rtol=1e-4, atol=1e-5)


def test_the_block_diagonal_adjacency_holds_each_members_matrix():
    x, edges = _graph()
    splits = [split_edges(x, torch.zeros(NODES, dtype=torch.long), edges, seed=s) for s in (2, 3)]
    block = block_diagonal_adjacency([s.message_passing_edges() for s in splits], NODES).to_dense()
    for i, split in enumerate(splits):
        own = gcn_normalized_adjacency(split.message_passing_edges(), NODES).to_dense()
        rows = slice(i * NODES, (i + 1) * NODES)
        assert torch.equal(block[rows, rows], own)
        assert block[rows].count_nonzero() == own.count_nonzero()  # nothing outside the member's block


def test_members_must_share_one_architecture():
    a, state = _member("vmf", "all_pairs", 0)
    torch.manual_seed(1)
    b = VGAE(FEATURES, build_latent("vmf", 3), hidden=16)
    with pytest.raises(ValueError, match="member 1 is not built like member 0"):
        StackedVGAE([a, b], MemberStreams([state, state]))


def _results(path) -> dict:
    return json.loads(path.read_text())["metrics"]


def test_seeds_on_a_graph_writes_each_members_separate_run(compose_train, tmp_path):
    """``seeds=[0,1]`` with model=vgae (a raw-format PubMed fixture): each member's folder has the separate run
    ``seed=<s>``'s numbers (its own split: test AUC and AP, the best validation epoch and its record)."""
    from hsvae.cli.train import train

    write_planetoid_fixture(tmp_path / "data", features=12)
    common = [f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}", "~logger", *FAST,
              "experiment=link_prediction", "dataset=pubmed", "dataset.verify=false", "latent=vmf",
              "trainer.max_epochs=4"]
    train(compose_train([*common, "seeds=[0,1]"], "stack"))
    for seed in (0, 1):
        member = _results(tmp_path / "stack" / f"seed_{seed}" / "results.json")
        separate = train(compose_train([*common, f"seed={seed}"], f"seed{seed}"))
        assert set(member) == set(separate)
        for key, value in separate.items():
            assert member[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (seed, key)
    assert _results(tmp_path / "stack" / "seed_0" / "results.json")["test/auc"] != \
        _results(tmp_path / "stack" / "seed_1" / "results.json")["test/auc"]  # two splits, two models


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_the_stacked_vgae_step_reads_nothing_back_to_the_host(tmp_path, latent):
    """The stacked link-prediction step (forward, loss, statistics, backward, Adam) on the meta device (see
    tests/test_training_step_sync.py): the inputs, built once per fit, are made on the CPU and moved, dense."""
    from hsvae.training.stacked_links import StackedLinkPredictionModule

    x, edges = _graph()
    splits = [split_edges(x, torch.zeros(NODES, dtype=torch.long), edges, seed=s) for s in (0, 1)]
    members = [_member(latent, "all_pairs", s) for s in (0, 1)]
    stack = StackedVGAE([m for m, _ in members], MemberStreams([s for _, s in members]))
    module = StackedLinkPredictionModule(stack, optimizer=lambda params: torch.optim.Adam(params, foreach=False))
    module.to("meta")
    graphs = [s.to("meta") for s in splits]
    adjacency = block_diagonal_adjacency([s.message_passing_edges() for s in splits], NODES).to_dense()
    module._inputs = (graphs, x.to("meta"), adjacency.to("meta"))  # (what inputs() builds once per fit)
    optimizer = module.configure_optimizers()
    for _ in range(2):
        loss = module.training_step(graphs, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.device.type == "meta" and loss.shape == ()



@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_the_stacked_vgae_step_on_a_device_never_waits(device):
    """On the device (the GPU runbook runs the cuda case), the stacked VGAE's training step (sparse messages,
    draws, all-pairs losses, backward, fused Adam) runs under ``torch.cuda.set_sync_debug_mode("error")`` on CUDA,
    and member 1's loss is the separate VGAE 1's."""
    x, edges = _graph()
    splits = [split_edges(x, torch.zeros(NODES, dtype=torch.long), edges, seed=s).to(device) for s in (0, 1)]
    cuda = device == "cuda"
    members = [_member("vmf", "all_pairs", s) for s in (0, 1)]
    if cuda:
        torch.cuda.manual_seed_all(0)
    stack = StackedVGAE([m.to(device) for m, _ in members],
                        MemberStreams([s for _, s in members], [torch.cuda.get_rng_state()] * 2 if cuda else None))
    features = encoder_features(x.to(device))
    adjacency = block_diagonal_adjacency([s.message_passing_edges() for s in splits], NODES)
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-2, fused=True)
    previous = torch.cuda.get_sync_debug_mode() if cuda else None
    if cuda:
        torch.cuda.set_sync_debug_mode("error")
    try:
        losses = torch.stack([t.loss() for t in stack(features, adjacency, [s.train_pos for s in splits])])
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(previous)
    net, state = _member("vmf", "all_pairs", 1)
    net = net.to(device)
    torch.set_rng_state(state)
    if cuda:  # member 1's CUDA stream started here
        torch.cuda.manual_seed_all(0)
    separate = net(features, gcn_normalized_adjacency(splits[1].message_passing_edges(), NODES), splits[1].train_pos)
    assert separate.loss().item() == pytest.approx(losses[1].item(), rel=1e-5)
