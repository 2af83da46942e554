"""Semi-supervised MNIST, the pieces: the balanced labelled subset, the M1 k-NN on latent spaces whose classes are
separated by construction, and the M2 model's bounds and likelihoods (against scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from hsvae.data import MNISTDataModule
from hsvae.data.base import Split
from hsvae.data.m1_codes import M1CodesDataModule, SemiSupervisedLoader
from hsvae.data.loaders import TensorLoader
from hsvae.distributions import DiagonalNormal, VonMisesFisher
from hsvae.evaluation import balanced_subset, m1_knn_accuracies
from hsvae.latents import DeterministicLatent, GaussianLatent, VonMisesFisherLatent
from hsvae.models import M2

# -- the labelled subset ---------------------------------------------------------------------------------------


def _labels(n: int = 5000, classes: int = 10, seed: int = 0) -> torch.Tensor:
    # unequal class sizes, as in MNIST
    g = torch.Generator().manual_seed(seed)
    probs = torch.linspace(1.0, 2.0, classes)
    return torch.multinomial(probs, n, replacement=True, generator=g)


@pytest.mark.parametrize("n", [10, 100, 600, 1000])
def test_subset_is_balanced_sorted_and_unique(n):
    labels = _labels()
    idx = balanced_subset(labels, n, seed=3)
    assert idx.shape == (n,) and idx.unique().numel() == n
    assert torch.equal(idx, idx.sort().values)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [n // 10] * 10


def test_subset_is_reproducible_for_a_seed_and_varies_with_it():
    labels = _labels()
    a, b = balanced_subset(labels, 100, seed=7), balanced_subset(labels, 100, seed=7)
    assert torch.equal(a, b)
    others = [balanced_subset(labels, 100, seed=s) for s in range(8, 12)]
    # two independent draws of 10 of ~500 points per class share about 10 * 10/500 = 0.2 points per class
    assert all(len(set(a.tolist()) & set(o.tolist())) < 20 for o in others)


def test_subset_of_each_class_is_a_uniform_draw():
    """Over many seeds every member of a class is picked about equally often (chi-square test)."""
    labels = torch.tensor([0] * 20 + [1] * 30)
    counts = torch.zeros(50)
    draws = 2000
    for seed in range(draws):
        counts[balanced_subset(labels, 10, seed=seed)] += 1
    for members, per_class in ((slice(0, 20), 5), (slice(20, 50), 5)):
        observed = counts[members].numpy()
        expected = np.full(observed.shape, draws * per_class / observed.size)
        assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_subset_from_real_mnist_is_disjoint_from_the_test_set(data_dir):
    """The labelled images come from the training split and none of them is a test image."""
    dm = MNISTDataModule(str(data_dir), binarize="none", download=False)
    dm.setup()
    train, test = dm.splits["train"], dm.splits["test"]
    idx = balanced_subset(train.y, 1000, seed=0)
    assert torch.bincount(train.y[idx], minlength=10).tolist() == [100] * 10
    test_images = {bytes(x.numpy().tobytes()) for x in test.x}
    assert not any(bytes(x.numpy().tobytes()) in test_images for x in train.x[idx])
    # and of course the labelled images are training images: each matches a distinct row of the split
    assert train.x[idx].flatten(1).unique(dim=0).shape[0] == 1000


@pytest.mark.parametrize(
    "n, fragment",
    [(105, "not divisible by the 10 classes"), (0, "positive integer"), (6000, "training set has only 5000"),
     (True, "positive integer")],
)
def test_bad_label_counts(n, fragment):
    with pytest.raises(ValueError, match=fragment):
        balanced_subset(_labels(), n)


def test_class_with_too_few_points():
    labels = torch.tensor([0] * 50 + [1] * 3)
    with pytest.raises(ValueError, match="class 1 has only 3"):
        balanced_subset(labels, 10)


# -- M1: k-NN on separated latent spaces -----------------------------------------------------------------------


def _clusters(n: int, d: int, seed: int, spherical: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of 10 classes around 10 orthogonal directions: well separated in R^d and on the sphere."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 10.0 * F.one_hot(y, d).float() + 0.5 * torch.randn(n, d, generator=g)
    if spherical:
        x = F.normalize(x, dim=-1)
    return x, y


@pytest.mark.parametrize("spherical", [False, True])
def test_knn_on_separated_classes_is_exact(spherical):
    train_x, train_y = _clusters(3000, 12, 0, spherical)
    test_x, test_y = _clusters(1000, 12, 1, spherical)
    metric = "cosine" if spherical else "euclidean"
    seen = []

    def embed(x):
        seen.append(x)
        return x

    acc = m1_knn_accuracies(embed, train_x, train_y, test_x, test_y, [100, 600, 1000], k=5, metric=metric)
    assert acc == {100: 1.0, 600: 1.0, 1000: 1.0}
    assert [s.shape[0] for s in seen] == [100, 600, 1000]  # only the labelled points are embedded

    # relabel 30% of the test points to a class they are not near: exactly 70% are then "right"
    wrong = torch.arange(1000) < 300
    acc = m1_knn_accuracies(lambda x: x, train_x, train_y, test_x, torch.where(wrong, (test_y + 1) % 10, test_y),
                            [100], k=5, metric=metric)
    assert acc[100] == pytest.approx(0.7, abs=1e-6)


def test_cosine_orders_by_direction_only():
    """On the sphere the neighbours are the nearest directions whatever the norms (the geodesic order)."""
    train_x, train_y = _clusters(2000, 12, 0, spherical=True)
    test_x, test_y = _clusters(500, 12, 1, spherical=True)
    # scale the labelled points of even classes by 100: directions unchanged, Euclidean neighbours wrecked
    scale = torch.where(train_y % 2 == 0, 100.0, 1.0).unsqueeze(1)
    acc_cos = m1_knn_accuracies(lambda x: x, train_x * scale, train_y, test_x, test_y, [100], metric="cosine")
    acc_euc = m1_knn_accuracies(lambda x: x, train_x * scale, train_y, test_x, test_y, [100], metric="euclidean")
    assert acc_cos[100] == 1.0
    even = (test_y % 2 == 0).float().mean().item()
    assert acc_euc[100] == pytest.approx(1.0 - even, abs=1e-6)  # every even-class test point is misclassified


def test_labelled_points_never_come_from_the_test_set():
    """The k-NN's reference points are drawn from the training inputs only (ids: train 0.., test 10000..)."""
    train_ids, train_y = torch.arange(5000.0).unsqueeze(1), _labels(5000)
    test_ids, test_y = torch.arange(10000.0, 11000.0).unsqueeze(1), _labels(1000, seed=1)
    seen = []

    def embed(x):
        seen.append(x.squeeze(1).long())
        return torch.randn(x.shape[0], 3)

    m1_knn_accuracies(embed, train_ids, train_y, torch.randn(1000, 3), test_y, [100, 1000], seed=0)
    used = torch.cat(seen)
    assert (used < 5000).all() and used.numel() == 1100
    assert set(used.tolist()).isdisjoint(set(test_ids.squeeze(1).long().tolist()))


def test_k_larger_than_the_labelled_set():
    x, y = _clusters(500, 12, 0, spherical=False)
    with pytest.raises(ValueError, match="k=20 neighbours exceeds the smallest labelled set"):
        m1_knn_accuracies(lambda v: v, x, y, x, y, [10, 100], k=20)


# -- M2 ----------------------------------------------------------------------------------------------------------


def _m2(z1_latent, latent, seed=0) -> M2:
    torch.manual_seed(seed)
    return M2(z1_latent, latent, num_classes=10, hidden=[32])


def test_unlabelled_bound_is_the_variational_identity():
    """U = sum_y q(y) L_y + H(q) <= logsumexp_y L_y, with equality when q = softmax(L) (deterministic z2)."""
    net = _m2(GaussianLatent(4), DeterministicLatent(3))
    z1 = torch.randn(7, 4)
    labels = torch.stack([net.labelled_bound(z1, torch.full((7,), c))[0] for c in range(10)], -1)
    assert torch.allclose(net.unlabelled_bound(z1, labels)[0], labels.logsumexp(-1), atol=1e-5)
    u, _ = net.unlabelled_bound(z1)
    logits = net.classify(z1)
    q = logits.softmax(-1)
    manual = (q * labels).sum(-1) - (q * q.log()).sum(-1)
    assert torch.allclose(u, manual, atol=1e-5)
    assert (u <= labels.logsumexp(-1) + 1e-5).all()


def test_labelled_bound_terms():
    """With a deterministic z2 (zero KL), L = log p(z1 | y, z2) + log(1/C), checked against scipy."""
    net = _m2(GaussianLatent(4), DeterministicLatent(3)).double()
    z1, y = torch.randn(5, 4, dtype=torch.float64), torch.arange(5)
    value, surrogate = net.labelled_bound(z1, y)
    onehot = F.one_hot(y, 10).double()
    z2 = net.latent.point(net.posterior(z1, onehot))
    p = net.likelihood(z2, onehot)
    assert isinstance(p, DiagonalNormal)
    mu, sigma = p.loc.detach().numpy(), p.scale.detach().numpy()
    expected = stats.norm.logpdf(z1.numpy(), mu, sigma).sum(-1) - math.log(10)
    np.testing.assert_allclose(value.detach().numpy(), expected, rtol=1e-10)
    assert torch.equal(value, surrogate)


def test_spherical_z1_has_a_vmf_likelihood():
    net = _m2(VonMisesFisherLatent(4), DeterministicLatent(3)).double()
    assert net.z1_size == 5
    z1 = F.normalize(torch.randn(6, 5, dtype=torch.float64), dim=-1)
    onehot = F.one_hot(torch.arange(6), 10).double()
    p = net.likelihood(net.latent.point(net.posterior(z1, onehot)), onehot)
    assert isinstance(p, VonMisesFisher)
    ours = p.log_prob(z1).detach().numpy()
    ref = [stats.vonmises_fisher(mu, kappa).logpdf(x)
           for mu, kappa, x in zip(p.loc.detach().numpy(), p.scale.detach().numpy(), z1.numpy())]
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert (p.scale >= 1.0).all()  # z1_min_concentration


@pytest.mark.parametrize("z2", ["gaussian", "vmf"])
def test_labelled_bound_expectation_matches_monte_carlo(z2):
    """E[L] = E_q[log p(z1|y,z2)] + log(1/C) - KL: the KL (closed form) against log q - log p at fresh samples."""
    latent = GaussianLatent(3) if z2 == "gaussian" else VonMisesFisherLatent(3)
    net = _m2(GaussianLatent(4), latent).double()
    torch.manual_seed(1)
    z1, y = torch.randn(1, 4, dtype=torch.float64).expand(4000, 4), torch.full((4000,), 2)
    with torch.no_grad():
        value, _ = net.labelled_bound(z1, y)
        onehot = F.one_hot(y, 10).double()
        q = net.posterior(z1, onehot)
        z = q.sample()
        prior = latent.prior(z)
        mc = net.likelihood(z, onehot).log_prob(z1) - math.log(10) - (q.log_prob(z) - prior.log_prob(z))
    se = math.hypot(value.std().item(), mc.std().item()) / math.sqrt(4000)
    assert abs(value.mean().item() - mc.mean().item()) < 5 * se


def test_vmf_latent_with_gradient_correction_keeps_the_value():
    net = _m2(VonMisesFisherLatent(4), VonMisesFisherLatent(3, grad_correction=True))
    z1 = F.normalize(torch.randn(8, 5), dim=-1)
    value, surrogate = net.unlabelled_bound(z1)
    assert torch.allclose(value, surrogate)
    surrogate.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.encoder.parameters())


@pytest.mark.parametrize("z2", ["gaussian", "vmf_corrected"])
def test_kl_weight_scales_the_surrogates_kl_only(z2):
    """kl_weight (the M2's KL warm-up) leaves the bound's value alone and scales the surrogate's KL term: with one
    z2 draw, surrogate(w) = surrogate(1) + (1 - w) KL(q(z2 | z1, y) || p(z2)), for L and for U."""
    latent = GaussianLatent(3) if z2 == "gaussian" else VonMisesFisherLatent(3, grad_correction=True)
    net = _m2(VonMisesFisherLatent(4), latent).double()
    z1, y = F.normalize(torch.randn(6, 5, dtype=torch.float64), dim=-1), torch.arange(6)
    q = net.posterior(z1, F.one_hot(y, 10).double())
    draws = {}
    for w in (1.0, 0.25):
        torch.manual_seed(1)
        draws[w] = net.labelled_bound(z1, y, w)
    torch.manual_seed(1)
    kl = net.latent.kl(q, net.latent.rsample(q))
    assert (kl > 0.1).all()
    assert torch.equal(draws[1.0][0], draws[0.25][0])  # the value is the bound whatever the weight
    torch.testing.assert_close(draws[0.25][1] - draws[1.0][1], 0.75 * kl)
    units = {}
    for w in (1.0, 0.0):
        torch.manual_seed(2)
        units[w] = net.unlabelled_bound(z1, kl_weight=w)
    assert torch.equal(units[1.0][0], units[0.0][0])
    assert (units[0.0][1] > units[1.0][1]).all()  # q(y)-weighted KL removed


def test_m2_module_kl_warmup_starts_at_zero_and_reaches_one():
    """warmup_epochs: the first step maximises the bound without z2's KL; after the warm-up, the bound."""
    import pytorch_lightning as pl

    from hsvae.training import M2Module

    torch.manual_seed(0)
    m1 = _IdentityM1()
    with torch.no_grad():
        m1.scale.fill_(1e-3)  # codes in [0, 1]: a loss at the scale of its KL (ids as codes made it ~1e10, the KL lost)
    dm = M1CodesDataModule(m1, _FakeImages(), n_labels=50, labelled_batch_size=10, batch_size=32)
    module = M2Module(M2(GaussianLatent(1), GaussianLatent(2), hidden=[16]),
                      optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), alpha=0.3, labelled_weight=0.05,
                      warmup_epochs=1)
    z_u, z_l, y_l = next(iter(dm.train_dataloader()))
    net = module.net

    def step_and_expected(w):
        torch.manual_seed(3)
        loss = module.training_step((z_u, z_l, y_l), 0).item()
        torch.manual_seed(3)
        labelled = net.labelled_bound(z_l, y_l, w)[1].mean()
        unlabelled = net.unlabelled_bound(z_u, kl_weight=w)[1].mean()
        return loss, (-(0.05 * labelled + 0.95 * unlabelled) + 0.3 * F.cross_entropy(net.classify(z_l), y_l)).item()

    loss, expected = step_and_expected(0.0)  # epoch 0, batch 0: no KL
    tolerance = 1e-6 * abs(expected)  # float32 rounding of the loss
    assert abs(loss - expected) <= tolerance
    assert abs(step_and_expected(1.0)[1] - expected) > 10 * tolerance  # the KL term is visible at this scale
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    loss, expected = step_and_expected(1.0)  # epoch 2 >= the 1-epoch warm-up: the bound itself
    assert abs(loss - expected) <= 1e-6 * abs(expected)
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        M2Module(M2(GaussianLatent(1), DeterministicLatent(2)), optimizer=None, warmup_epochs=-1)


def test_m2_bad_input():
    with pytest.raises(ValueError, match=r"z1 of shape \(B, 4\)"):
        _m2(GaussianLatent(4), GaussianLatent(3)).classify(torch.randn(3, 5))
    with pytest.raises(ValueError, match="num_classes"):
        M2(GaussianLatent(4), GaussianLatent(3), num_classes=1)


# -- the data module ------------------------------------------------------------------------------------------


class _FakeImages:
    """A stand-in image data module: 'images' are their own ids (train 0..999, val 1000.., test 2000..)."""

    num_classes = 10

    def __init__(self):
        self.splits = {}

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        self.splits = {name: Split(torch.arange(start, start + n, dtype=torch.float32).unsqueeze(1),
                                   torch.randint(0, 10, (n,), generator=g))
                       for name, start, n in (("train", 0, 1000), ("val", 1000, 200), ("test", 2000, 300))}


class _IdentityM1(torch.nn.Module):
    """A stand-in M1 whose posterior for 'image' x is N(x, sd^2) in one dimension: its mean code is x itself."""

    def __init__(self, sd: float = 0.1):
        super().__init__()
        self.latent = GaussianLatent(1)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.raw_sd = math.log(math.expm1(sd - self.latent.min_scale))  # sd = softplus(raw) + min_scale

    def posterior_params(self, x):
        return torch.cat([x * self.scale, torch.full_like(x, self.raw_sd)], -1)

    def embed(self, x):
        return x * self.scale


def test_codes_data_module_splits_and_batches():
    dm = M1CodesDataModule(_IdentityM1(), _FakeImages(), n_labels=50, labelled_batch_size=20, batch_size=64,
                           sample_codes=False)
    dm.setup()
    labelled, unlabelled = dm.splits["labelled"], dm.splits["train"]
    assert len(labelled) == 50 and len(unlabelled) == 950 and dm.n_labelled == 50
    assert torch.bincount(labelled.y, minlength=10).tolist() == [5] * 10
    ids_l, ids_u = set(labelled.x.squeeze(1).tolist()), set(unlabelled.x.squeeze(1).tolist())
    assert ids_l.isdisjoint(ids_u) and ids_l | ids_u == set(map(float, range(1000)))
    loader = dm.train_dataloader()
    assert isinstance(loader, SemiSupervisedLoader) and len(loader) == 15
    seen_l = []
    for z_u, z_l, y_l in loader:
        assert z_l.shape == (20, 1) and (z_u < 1000).all()
        seen_l.append(z_l.squeeze(1))
    # the labelled set is cycled: 15 batches of 20 cover each of the 50 labelled codes 5 or 6 times
    counts = torch.cat(seen_l).long().bincount(minlength=1000)[labelled.x.squeeze(1).long()]
    assert counts.min() >= 4 and counts.sum() == 300
    x, y = next(iter(dm.test_dataloader()))
    assert (x >= 2000).all()


def test_training_codes_are_fresh_posterior_draws():
    """sample_codes (Kingma et al.'s protocol): every training batch draws z1 ~ q(z1 | x) anew, N(x, 0.1^2) for the
    stand-in M1 (ids 1 apart, so rounding recovers the image); validation and test codes are the means."""
    torch.manual_seed(0)
    dm = M1CodesDataModule(_IdentityM1(sd=0.1), _FakeImages(), n_labels=50, labelled_batch_size=50, batch_size=950)
    dm.setup()
    labelled_ids = set(dm.splits["labelled"].x.squeeze(1).long().tolist())
    assert dm.splits["train"].x.squeeze(1).tolist() == sorted(set(range(1000)) - labelled_ids)
    draws = {}
    for epoch in range(20):
        for z_u, z_l, _ in dm.train_dataloader():
            for z in (z_u.squeeze(1), z_l.squeeze(1)):
                for image, noise in zip(z.round().long().tolist(), (z - z.round()).tolist()):
                    draws.setdefault(image, []).append(noise)
    assert sorted(draws) == list(range(1000)) and all(len(v) == 20 for v in draws.values())
    noise = torch.tensor([v for vs in draws.values() for v in vs], dtype=torch.float64)
    n = noise.numel()  # 20,000 draws of N(0, 0.1^2)
    assert abs(noise.mean().item()) < 5 * 0.1 / math.sqrt(n)
    assert abs(noise.std().item() - 0.1) < 5 * 0.1 / math.sqrt(2 * n)
    assert len({round(v, 6) for v in draws[3]}) == 20  # a new draw every epoch
    x, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(x, x.round()) and (x >= 1000).all()  # evaluation: the means


def test_sampled_codes_need_the_m1_posterior():
    class MeansOnly(torch.nn.Module):
        latent = GaussianLatent(1)

        def embed(self, x):
            return x

    with pytest.raises(ValueError,
                       match="sample_codes=true .* has no posterior_params; set sample_codes=false"):
        M1CodesDataModule(MeansOnly(), _FakeImages())
    M1CodesDataModule(MeansOnly(), _FakeImages(), sample_codes=False)


def test_codes_data_module_bad_n_labels():
    with pytest.raises(ValueError, match="n_labels must be a positive multiple of the 10 classes"):
        M1CodesDataModule(_IdentityM1(), _FakeImages(), n_labels=55)


def test_semisupervised_loader_reshuffles_the_labelled_set():
    labelled = TensorLoader(torch.arange(10.0), torch.arange(10), batch_size=5, shuffle=True, drop_last=True, seed=1)
    unlabelled = TensorLoader(torch.zeros(40), batch_size=5)
    batches = [z_l.tolist() for _, z_l, _ in SemiSupervisedLoader(unlabelled, labelled)]
    epochs = [sorted(batches[i] + batches[i + 1]) for i in range(0, 8, 2)]
    assert all(e == list(map(float, range(10))) for e in epochs)  # each pair of batches is one pass
    assert len({tuple(batches[i]) for i in range(0, 8, 2)}) > 1  # in a new order each pass


def test_m2_module_loss_is_kingmas_objective_per_point():
    """loss = -(w L_labelled + (1 - w) U_unlabelled) + alpha CE, w = N_l / N by default (deterministic z2)."""
    import pytorch_lightning as pl

    from hsvae.training import M2Module

    dm = M1CodesDataModule(_IdentityM1(), _FakeImages(), n_labels=50, labelled_batch_size=10, batch_size=32)
    module = M2Module(M2(GaussianLatent(1), DeterministicLatent(2), hidden=[16]),
                      optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), alpha=0.3)
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert module._labelled_weight == pytest.approx(50 / 1000)
    assert trainer.global_step == 3

    z_u, z_l, y_l = next(iter(dm.train_dataloader()))
    w, net = 0.05, module.net
    expected = -(w * net.labelled_bound(z_l, y_l)[0].mean() + (1 - w) * net.unlabelled_bound(z_u)[0].mean()) \
        + 0.3 * F.cross_entropy(net.classify(z_l), y_l)
    assert module.training_step((z_u, z_l, y_l), 0).item() == pytest.approx(expected.item(), rel=1e-6)

    fixed = M2Module(M2(GaussianLatent(1), DeterministicLatent(2)), optimizer=None, labelled_weight=0.5)
    assert fixed._labelled_weight == 0.5
    with pytest.raises(ValueError, match="labelled_weight must lie in"):
        M2Module(M2(GaussianLatent(1), DeterministicLatent(2)), optimizer=None, labelled_weight=1.5)
