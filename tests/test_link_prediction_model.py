"""The VGAE as a plain module: Kipf's all-pairs loss against an independent float64 reference, the GCN
normalisation, the ranking metrics against sklearn, and every latent family through the latent interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, log_expit
from sklearn.metrics import average_precision_score, roc_auc_score

from hsvae.data.links import LinkSplit, undirected_edges
from hsvae.cli.registry import build_latent, latent_families
from hsvae.latents import GaussianLatent, VonMisesFisherLatent
from hsvae.evaluation import average_precision, roc_auc
from hsvae.models import VGAE
from hsvae.models.vgae import all_pairs_reconstruction_loss, encoder_features, gcn_normalized_adjacency, sample_pairs

LATENTS = latent_families()


def random_graph(n: int = 30, m: int = 70, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return undirected_edges(torch.randint(n, (2, m), generator=g), n)


def kipf_loss_numpy(z: np.ndarray, edges: np.ndarray) -> float:
    """gae/optimizer.py: norm * mean(weighted_cross_entropy_with_logits(logits, A_train + I, pos_weight))."""
    n = z.shape[0]
    adjacency = np.zeros((n, n))
    adjacency[edges[0], edges[1]] = adjacency[edges[1], edges[0]] = 1.0
    ones = adjacency.sum()
    pos_weight = (n * n - ones) / ones
    norm = n * n / float((n * n - ones) * 2)
    label = adjacency + np.eye(n)
    logits = z @ z.T
    # TF's weighted_cross_entropy_with_logits: -[pos_weight * y * log sigmoid(l) + (1 - y) log(1 - sigmoid(l))]
    loss = -(pos_weight * label * log_expit(logits) + (1 - label) * log_expit(-logits))
    return norm * loss.mean()


@pytest.mark.parametrize("block_rows", [1, 7, 30, 256])
def test_all_pairs_loss_matches_kipf_reference(block_rows):
    edges = random_graph()
    torch.manual_seed(1)
    z = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    loss = all_pairs_reconstruction_loss(z, edges, block_rows)
    reference = kipf_loss_numpy(z.detach().numpy(), edges.numpy())
    assert loss.item() == pytest.approx(reference, rel=1e-12)
    # the gradient against finite differences of the independent reference
    (grad,) = torch.autograd.grad(loss, z)
    h = 1e-6
    for i, k in [(0, 0), (3, 2), (29, 4), (int(edges[0, 0]), 1)]:
        plus, minus = z.detach().numpy().copy(), z.detach().numpy().copy()
        plus[i, k] += h
        minus[i, k] -= h
        numeric = (kipf_loss_numpy(plus, edges.numpy()) - kipf_loss_numpy(minus, edges.numpy())) / (2 * h)
        assert grad[i, k].item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_all_pairs_loss_gradcheck_and_no_grad_path():
    edges = random_graph(12, 20)
    torch.manual_seed(2)
    z = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: all_pairs_reconstruction_loss(t, edges, 5), (z,))
    with torch.no_grad():
        value = all_pairs_reconstruction_loss(z, edges, 5)
    assert value.item() == pytest.approx(kipf_loss_numpy(z.detach().numpy(), edges.numpy()), rel=1e-12)
    # float32 with large logits: finite, close to the float64 value
    big = (10 * torch.randn(12, 3, dtype=torch.float64)).requires_grad_()
    loss32 = all_pairs_reconstruction_loss(big.float(), edges)
    assert torch.isfinite(loss32) and loss32.item() == pytest.approx(kipf_loss_numpy(big.detach().numpy(), edges.numpy()), rel=1e-4)


def test_gcn_normalisation_matches_dense_formula():
    n = 10
    edges = random_graph(n, 15, seed=3)
    both = torch.cat([edges, edges.flip(0)], 1)
    a = np.zeros((n, n))
    a[both[0], both[1]] = 1.0
    a_hat = a + np.eye(n)
    d = np.diag(1 / np.sqrt(a_hat.sum(1)))
    expected = d @ a_hat @ d
    got = gcn_normalized_adjacency(both, n, torch.float64)
    assert got.layout == torch.sparse_csr
    np.testing.assert_allclose(got.to_dense().numpy(), expected, rtol=1e-12)


def test_sparse_features_give_the_same_products():
    torch.manual_seed(4)
    x = (torch.rand(50, 40) < 0.05).float()
    w = torch.randn(40, 8)
    assert encoder_features(x).layout == torch.sparse_csr
    assert encoder_features(torch.randn(50, 40)).layout == torch.strided  # dense features stay dense
    torch.testing.assert_close(encoder_features(x) @ w, x @ w)


def test_sampled_pairs_avoid_self_loops_and_training_edges():
    torch.manual_seed(5)
    edges = random_graph(8, 20, seed=5)
    sampled = sample_pairs(8, 5000, edges)
    assert (sampled[0] < sampled[1]).all()
    codes = set((sampled[0] * 8 + sampled[1]).tolist())
    assert not codes & set((edges[0] * 8 + edges[1]).tolist())
    # every other pair appears (28 pairs minus the edges)
    assert len(codes) == 28 - edges.shape[1]
    # the few excluded draws: about a share edges / 28 of them
    assert 5000 * (1 - edges.shape[1] / 28) - 200 < sampled.shape[1] < 5000


# -- ranking metrics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_ap_match_sklearn(ties):
    torch.manual_seed(6)
    labels = torch.randint(0, 2, (500,))
    scores = labels * 0.7 + torch.randn(500)
    if ties:
        scores = scores.round()  # few distinct values: ties everywhere
    assert roc_auc(scores, labels).item() == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    assert average_precision(scores, labels).item() == pytest.approx(
        average_precision_score(labels.numpy(), scores.numpy()), abs=1e-12
    )


def test_metric_extremes_and_bad_input():
    labels = torch.tensor([1, 1, 0, 0, 0])
    perfect = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert roc_auc(perfect, labels) == 1.0 and average_precision(perfect, labels) == 1.0
    assert roc_auc(-perfect, labels) == 0.0
    assert roc_auc(torch.zeros(5), labels) == 0.5  # all tied: chance
    with pytest.raises(ValueError, match="positive and negative"):
        roc_auc(perfect, torch.ones(5))
    with pytest.raises(ValueError, match="same length"):
        average_precision(perfect, labels[:3])


# -- the model with every latent family --------------------------------------------------------------------------


def small_split(n: int = 40, features: int = 6, seed: int = 0) -> LinkSplit:
    g = torch.Generator().manual_seed(seed)
    edges = random_graph(n, 120, seed)
    x = torch.rand(n, features, generator=g)
    return LinkSplit(x, torch.zeros(n, dtype=torch.long), edges[:, 10:], edges[:, :5], edges[:, :5], edges[:, 5:10],
                     edges[:, 5:10])


@pytest.mark.parametrize("reconstruction", ["all_pairs", "sampled"])
@pytest.mark.parametrize("latent", LATENTS)
def test_every_latent_family_trains_through_the_interface(latent, reconstruction):
    torch.manual_seed(7)
    family = build_latent(latent, 3)
    net = VGAE(6, family, hidden=8, reconstruction=reconstruction)
    graph = small_split()
    x = encoder_features(graph.x)
    adjacency = gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes)
    terms = net(x, adjacency, graph.train_pos)
    assert terms.z.shape == (40, family.event_size) and terms.kl.shape == (40,)
    assert (terms.kl >= -1e-5).all()  # closed forms for every family
    loss = terms.loss()
    assert loss.item() == pytest.approx((terms.reconstruction + terms.kl.mean() / 40).item(), rel=1e-6)
    loss.backward()
    grads = {name: p.grad for name, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values()), grads.keys()
    # latents on spheres: unit-norm samples (per factor on a product) and a learnable decoder scale; Gaussian:
    # no scale parameter
    assert ("decoder.log_scale" in grads) == bool(family.spheres)
    for block in terms.z.split(family.spheres, dim=-1) if family.spheres else ():
        torch.testing.assert_close(block.norm(dim=-1), torch.ones(40), rtol=0, atol=1e-5)
    z = net.embed(x, adjacency)
    logits = net.logits(z, graph.test_pos)
    torch.testing.assert_close(logits, net.scale * (z[graph.test_pos[0]] * z[graph.test_pos[1]]).sum(-1))


def test_vmf_gradient_correction_keeps_the_loss_value():
    torch.manual_seed(8)
    net = VGAE(6, VonMisesFisherLatent(3, grad_correction=True), hidden=8)
    graph = small_split()
    adjacency = gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes)
    terms = net(graph.x, adjacency, graph.train_pos)
    assert terms.sample.score is not None and terms.node_reconstruction is not None
    assert terms.loss().item() == pytest.approx((terms.reconstruction + terms.kl.mean() / 40).item(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"in_features": 0}, "in_features"),
        ({"hidden": 0}, "hidden"),
        ({"reconstruction": "dense"}, "reconstruction"),
        ({"negatives_per_positive": 0}, "negatives_per_positive"),
        ({"init_scale": 0.0}, "init_scale"),
        ({"block_rows": 0}, "block_rows"),
    ],
)
def test_bad_arguments_are_refused(kwargs, fragment):
    args = {"in_features": 6, "latent": GaussianLatent(2), **kwargs}
    with pytest.raises(ValueError, match=fragment):
        VGAE(**args)


def test_latent_dimension_zero_is_refused():
    with pytest.raises(ValueError, match="dim must be an integer >= 1"):
        VGAE(6, GaussianLatent(0))


def test_feature_count_mismatch_is_reported():
    net = VGAE(5, GaussianLatent(2))
    graph = small_split()
    with pytest.raises(ValueError, match="5 node features"):
        net.embed(graph.x, gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes))


@pytest.mark.parametrize("latent", LATENTS)
def test_featureless_isolated_node_gets_a_valid_posterior(latent):
    """CiteSeer has nodes with all-zero features; one without training edges has a zero raw output under
    bias-free layers, and a spherical direction 0/0. The spherical default has an output bias."""
    torch.manual_seed(9)
    graph = small_split()
    graph.x[0] = 0.0
    keep = (graph.train_pos != 0).all(0)
    graph = LinkSplit(graph.x, graph.y, graph.train_pos[:, keep], graph.val_pos, graph.val_neg, graph.test_pos,
                      graph.test_neg)
    net = VGAE(6, build_latent(latent, 3), hidden=8)
    adjacency = gcn_normalized_adjacency(graph.message_passing_edges(), graph.num_nodes)
    q = net.posterior(graph.x, adjacency)  # validates its arguments (tests turn validation on)
    loss = net(graph.x, adjacency, graph.train_pos).loss()
    assert torch.isfinite(loss)
    if net.latent.spheres:
        for block in net.latent.point(q)[0].split(net.latent.spheres):
            torch.testing.assert_close(q.mean.new_tensor(1.0), block.norm(), rtol=0, atol=1e-5)
    else:
        assert net.encoder.conv2.bias is None  # Kipf's bias-free layers for the N-VGAE


def test_per_node_terms_are_the_pairs_each_node_is_in():
    edges = random_graph()
    torch.manual_seed(10)
    z = torch.randn(30, 4, dtype=torch.float64)
    n = 30
    total, per_node = all_pairs_reconstruction_loss(z, edges, 7, per_node=True)
    # the unreduced pair losses of the reference, scaled as the mean is
    a = np.zeros((n, n))
    a[edges[0], edges[1]] = a[edges[1], edges[0]] = 1.0
    ones = a.sum()
    w, norm = (n * n - ones) / ones, n * n / (2 * (n * n - ones))
    label = a + np.eye(n)
    logits = z.numpy() @ z.numpy().T
    pair = -(w * label * log_expit(logits) + (1 - label) * log_expit(-logits)) * norm / n**2
    expected = pair.sum(1) + pair.sum(0) - np.diag(pair)
    np.testing.assert_allclose(per_node.numpy(), expected, rtol=1e-10)
    assert total.item() == pytest.approx(pair.sum(), rel=1e-12)

    # sampled negatives: every pair term counted once for each of its two nodes
    net = VGAE(6, GaussianLatent(4), reconstruction="sampled")
    loss, node = net.reconstruction_loss(z.float(), edges, per_node=True)
    assert node.sum().item() == pytest.approx(2 * loss.item(), rel=1e-5)


def test_vmf_correction_estimator_agrees_with_the_whole_loss_version():
    """Both sum_i f_i * score_i (the per-node terms) and f * sum_i score_i (the whole loss) are unbiased for the
    gradient in the concentrations: their Monte-Carlo means agree within 5 standard errors, and the per-node
    one has the smaller variance."""
    torch.manual_seed(11)
    n, m = 6, 3
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    latent = VonMisesFisherLatent(m - 1, grad_correction=True)
    loc = torch.nn.functional.normalize(torch.randn(n, m), dim=-1)
    raw = torch.cat([loc, torch.full((n, 1), 1.0)], dim=-1).requires_grad_()
    per_node_grads, whole_grads = [], []
    for _ in range(3000):
        q = latent.posterior(raw)
        z, correction = q.rsample_with_correction()
        loss, node = all_pairs_reconstruction_loss(3.0 * z, edges, per_node=True)
        for surrogate, out in (((node * correction).sum(), per_node_grads), (loss.detach() * correction.sum(), whole_grads)):
            (g,) = torch.autograd.grad(loss + surrogate, raw, retain_graph=True)
            out.append(g[:, -1])
    a, b = torch.stack(per_node_grads), torch.stack(whole_grads)
    diff = a - b
    se = diff.std(0) / len(diff) ** 0.5
    assert (diff.mean(0).abs() <= 5 * se + 1e-6).all(), (diff.mean(0), se)
    assert (a.var(0) <= b.var(0)).all()
