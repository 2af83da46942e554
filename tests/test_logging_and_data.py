"""W&B offline logging, real-MNIST training, and the synthetic sphere's latent separation."""

from __future__ import annotations

import json
import time

import hydra
import pytest
import torch

from hsvae.cli.train import train
from hsvae.data import MNISTDataModule, SyntheticSphereDataModule
from tests.support.wandb_offline import read_offline_run
from tests.conftest import FAST


def test_wandb_offline_run_holds_metrics_config_and_images(compose_train, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train(
        ["logger=wandb", "latent=gaussian", "trainer.max_epochs=2", "dataset.n_train=640",
         "callbacks.latent_plot.every_n_epochs=1", "tags=[unit-test]", *FAST]
    )
    train(cfg)
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "exactly one offline run (no key configured -> offline mode)"
    # W&B's background writer may still be flushing the run file after wandb.finish() returns: a read can find the
    # last record cut short (a protobuf decode error) or not there yet; read again until the deadline
    deadline = time.monotonic() + 20

    def read():
        try:
            return read_offline_run(runs[0])
        except Exception:  # noqa: BLE001  (a record being written; the final read below must succeed)
            if time.monotonic() > deadline:
                raise
            return {"history_keys": set()}

    run = read()
    while "test/elbo" not in run["history_keys"] and time.monotonic() < deadline:
        time.sleep(0.5)
        run = read()
    assert {"train/elbo", "val/elbo", "val/kl", "test/elbo", "test/log_likelihood", "latent/path"} <= run["history_keys"]
    # the resolved config, including the latent family, is the run's W&B config
    assert "VonMisesFisher" not in run["config"]["latent"] and "GaussianLatent" in run["config"]["latent"]
    val_elbos = [json.loads(h["val/elbo"]) for h in run["history"] if "val/elbo" in h]
    assert len(val_elbos) == 2 and all(isinstance(v, float) for v in val_elbos)
    images = list((runs[0] / "files" / "media" / "images").glob("latent_*.png"))
    assert len(images) == 3  # epochs 1, 2 and the final figure


@pytest.mark.parametrize("latent", [pytest.param("gaussian", marks=pytest.mark.slow), "vmf"])
def test_mnist_short_training_beats_untrained_and_ll_bounds_elbo(compose_train, data_dir, latent):
    """One epoch on a 10k-image subset: the validation ELBO is far above an untrained model's (about -543
    nats = -784 log 2), and the importance-sampled log-likelihood is at least the ELBO."""
    cfg = compose_train(
        [f"latent={latent}", "latent.dim=5", "dataset=mnist", f"paths.data_dir={data_dir}", "trainer.max_epochs=1",
         "+trainer.limit_train_batches=160", "+trainer.limit_test_batches=2", "model.warmup_epochs=0",
         "evaluation.ll.samples=100", "dataset.batch_size=64", *FAST]
    )
    metrics = train(cfg)
    assert metrics["val/elbo"] > -220, metrics
    # IS with 100 samples: E[log p_hat] >= ELBO; 2000 test images average the noise down to << 1 nat
    assert metrics["test/log_likelihood"] >= metrics["test/elbo"] - 0.5, metrics


def test_mnist_datamodule_splits_and_binarisation(data_dir):
    dm = MNISTDataModule(str(data_dir), val_size=10000, download=False)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 50000, "val": 10000, "test": 10000}
    val = dm.splits["val"].x
    assert set(val.unique().tolist()) == {0.0, 1.0}  # statically binarised once
    train = dm.splits["train"].x
    assert 0.0 < train.mean() < 0.5 and len(train.unique()) > 2  # grey levels, binarised per batch
    assert dm.splits["train"].y.bincount().min() > 4000


def _knn_accuracy(train_x, train_y, test_x, test_y, k=5):
    d = torch.cdist(test_x, train_x)
    idx = d.topk(k, largest=False).indices
    votes = train_y[idx].mode(dim=1).values
    return (votes == test_y).float().mean().item()


@pytest.mark.slow  # ~15 s: two 15-epoch trainings
def test_svae_separates_synthetic_clusters_at_least_as_well_as_nvae(compose_train):
    """The S-VAE paper's synthetic experiment: k-NN accuracy of held-out latent means on the generating
    mixture components."""
    accuracy = {}
    for latent in ("gaussian", "vmf"):
        cfg = compose_train([f"latent={latent}", "latent.dim=2", "trainer.max_epochs=15", *FAST], name=latent)
        train(cfg)
        # the model of the best validation epoch, rebuilt from the config
        ckpt = torch.load(cfg.paths.output_dir + "/checkpoints/best.ckpt", map_location="cpu", weights_only=True)
        model = hydra.utils.instantiate(cfg.model)
        model.load_state_dict(ckpt["state_dict"])
        dm = hydra.utils.instantiate(cfg.dataset)
        dm.setup()
        with torch.no_grad():
            emb = {s: model.net.embed(dm.splits[s].x) for s in ("train", "test")}
        accuracy[latent] = _knn_accuracy(emb["train"], dm.splits["train"].y, emb["test"], dm.splits["test"].y)
    # the true angles separate the three components with k-NN accuracy ~0.95 at concentration 8
    assert accuracy["vmf"] > 0.85, accuracy
    # "at least as well": allow the binomial noise of 1000 test points (2 standard errors ~ 0.02)
    assert accuracy["vmf"] >= accuracy["gaussian"] - 0.02, accuracy


def test_synthetic_data_is_deterministic_and_split_disjoint():
    a = SyntheticSphereDataModule(n_train=100, n_val=20, n_test=20)
    b = SyntheticSphereDataModule(n_train=100, n_val=20, n_test=20)
    a.setup(), b.setup()
    assert torch.equal(a.splits["train"].x, b.splits["train"].x)
    assert a.splits["train"].x.shape == (100, 100)
    assert not torch.equal(a.splits["train"].x[:20], a.splits["val"].x)
    c = SyntheticSphereDataModule(n_train=100, n_val=20, n_test=20, data_seed=1)
    c.setup()
    assert not torch.equal(a.splits["train"].x, c.splits["train"].x)


def test_a_loader_draws_the_permutation_of_the_trainers_epoch():
    """With ``epoch_of`` (the data modules pass the trainer's epoch) an iteration draws that epoch's permutation:
    a fit resumed at epoch 2 sees epoch 2's order, where a counter would start again at epoch 0's."""
    from hsvae.data.loaders import TensorLoader

    data = torch.arange(20)
    counted = TensorLoader(data, batch_size=20, shuffle=True, seed=3)
    orders = [next(iter(counted))[0] for _ in range(3)]
    assert not torch.equal(orders[0], orders[2])
    epoch = {"now": 2}
    resumed = TensorLoader(data, batch_size=20, shuffle=True, seed=3, epoch_of=lambda: epoch["now"])
    assert torch.equal(next(iter(resumed))[0], orders[2])
    epoch["now"] = 0
    assert torch.equal(next(iter(resumed))[0], orders[0])


def test_a_campaigns_own_records_do_not_make_the_commit_dirty(tmp_path):
    """Untracked run records under experiments/ or logs/ (a campaign writing its runs) leave the commit clean; an
    untracked or changed source file marks it -dirty."""
    import subprocess

    from hsvae.utils.run_info import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    (tmp_path / "experiments" / "t" / "runs" / "r").mkdir(parents=True)
    (tmp_path / "experiments" / "t" / "runs" / "r" / "results.json").write_text("{}")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "x.log").write_text("")
    assert not git_commit(tmp_path).endswith("-dirty")
    assert not git_commit(tmp_path / "experiments").endswith("-dirty")
    (tmp_path / "b.py").write_text("y = 2\n")
    assert git_commit(tmp_path).endswith("-dirty")
