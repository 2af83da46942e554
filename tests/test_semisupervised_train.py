"""Semi-supervised MNIST end to end on the real data: the M1 k-NN evaluation in a training run and from eval.py
(against scikit-learn's k-NN), an M1+M2 run that trains its M1 first, reuse of a trained M1, and bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from sklearn.neighbors import NearestNeighbors

from hsvae.cli.evaluate import evaluate
from hsvae.cli.failures import classify
from hsvae.cli.m1 import load_m1
from hsvae.cli.train import train
from hsvae.data import MNISTDataModule
from hsvae.evaluation import balanced_subset
from hsvae.utils.errors import ConfigError, EvaluationError

from tests.conftest import FAST, compose_config

LABELS = [100, 600, 1000]
SMALL = ["+trainer.limit_val_batches=2", "+trainer.num_sanity_val_steps=0", *FAST]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def m1_run(tmp_path_factory, data_dir) -> Path:
    """A Gaussian MNIST VAE (d = 5) trained for 60 steps, with the M1 evaluation on."""
    run_dir = tmp_path_factory.mktemp("m1") / "run"
    cfg = compose_config("train", [
        "dataset=mnist", "latent=gaussian", "latent.dim=5", f"paths.data_dir={data_dir}", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=60", "evaluation=[m1]", "model.warmup_epochs=0",
        f"evaluation.m1.labels=[{','.join(map(str, LABELS))}]", *SMALL], run_dir)
    train(cfg)
    assert (run_dir / ".hydra" / "config.yaml").is_file()  # train() saves the run's config (m1_vae reads it)
    yield run_dir
    GlobalHydra.instance().clear()


def _sklearn_m1(ckpt: Path, data_dir: Path, n: int, k: int, seed: int) -> tuple[float, float]:
    """The M1 accuracy recomputed independently: the checkpoint's encoder, the same balanced subset (binarised
    once with the seed), scikit-learn's neighbours (float64). Also the fraction of test points whose k-th and
    (k+1)-th neighbours are equally far: their neighbour sets, and so possibly their votes, are a matter of
    tie-breaking (a barely trained encoder maps many images to the very same point)."""
    vae = load_m1(ckpt, OmegaConf.create({"_target_": "hsvae.latents.GaussianLatent", "dim": 5}))
    dm = MNISTDataModule(str(data_dir), seed=seed, download=False)
    dm.setup()
    train_split, test = dm.splits["train"], dm.splits["test"]
    idx = balanced_subset(train_split.y, n, seed=seed)
    labelled = torch.bernoulli(train_split.x[idx], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference, queries = (vae.embed(v).double().numpy() for v in (labelled, test.x))
    distances, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(reference).kneighbors(queries)
    tied = float(np.mean(distances[:, k - 1] == distances[:, k]))
    # the vote breaks ties between classes towards the smallest label, as hsvae's k-NN does
    votes = train_split.y[idx].numpy()[neighbours[:, :k]]
    predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    return float((predicted == test.y.numpy()).mean()), tied


def test_m1_knn_in_results_json(m1_run, data_dir):
    metrics = results(m1_run)["metrics"]
    accuracies = [metrics[f"test/m1_knn_{n}"] for n in LABELS]
    # 60 steps already give a latent space where 10 labels per class beat chance (0.1) by far
    assert all(0.25 < a <= 1.0 for a in accuracies), accuracies
    ckpt = m1_run / "checkpoints" / "best.ckpt"
    # test/m1_knn_100 against an independent computation (ties between equal distances aside: none expected)
    expected, tied = _sklearn_m1(ckpt, data_dir, 100, 5, 0)
    assert tied < 0.05
    assert metrics["test/m1_knn_100"] == pytest.approx(expected, abs=tied + 2e-4)


def test_m1_knn_from_eval_on_a_checkpoint(m1_run, data_dir, tmp_path):
    ckpt = m1_run / "checkpoints" / "best.ckpt"
    cfg = compose_config("eval", [f"ckpt_path={ckpt}", "evaluation=[m1]", "evaluation.m1.labels=[100,1000]",
                                  "evaluation.m1.k=3", "seed=4", *FAST[1:]],
                         tmp_path / "eval")
    metrics = evaluate(cfg)
    assert {"test/m1_knn_100", "test/m1_knn_1000"} <= set(metrics) and "test/m1_knn_600" not in metrics
    expected, tied = _sklearn_m1(ckpt, data_dir, 1000, 3, 4)
    assert tied < 0.05
    assert metrics["test/m1_knn_1000"] == pytest.approx(expected, abs=tied + 2e-4)
    assert results(tmp_path / "eval")["metrics"]["test/m1_knn_100"] == metrics["test/m1_knn_100"]


def test_m1_label_counts_are_checked_before_training(data_dir, tmp_path):
    cfg = compose_config("train", ["dataset=mnist", "latent=gaussian", f"paths.data_dir={data_dir}",
                                   "evaluation.m1.labels=[100,105]", "+trainer.fast_dev_run=true", *FAST], tmp_path / "r")
    with pytest.raises(EvaluationError, match=r"evaluation.m1.labels=\[100, 105\]: .*n_labels=105 is not divisible by the 10") as raised:
        train(cfg)
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before training; the record says why
    assert json.loads((tmp_path / "r" / "results.json").read_text())["status"] == "failed"
    code, line = classify(raised.value)  # a usage error in one line, not "unexpected ... probably a bug"
    assert code == 2 and line.startswith("error: evaluation.m1.labels=[100, 105]") and "\n" not in line
    cfg = compose_config("train", ["dataset=mnist", f"paths.data_dir={data_dir}", "evaluation.m1.labels=[60000]",
                                   "+trainer.fast_dev_run=true", *FAST], tmp_path / "r2")
    with pytest.raises(ValueError, match="training set has only 50000"):
        train(cfg)
    cfg = compose_config("train", ["dataset=mnist", f"paths.data_dir={data_dir}", "evaluation.m1.labels=[10,100]",
                                   "evaluation.m1.k=11", "+trainer.fast_dev_run=true", *FAST], tmp_path / "r3")
    # raised by the evaluator's constructor, named as its config key
    with pytest.raises(ConfigError, match="evaluation.m1.k=11 neighbours exceeds the smallest labelled"):
        train(cfg)


# -- M1+M2 ---------------------------------------------------------------------------------------------------


def _m1m2(data_dir: Path, run_dir: Path, *overrides: str):
    return compose_config("train", [
        "experiment=semisupervised_table", f"paths.data_dir={data_dir}", "trainer.max_epochs=2",
        "+trainer.limit_train_batches=30", "m1.overrides=['evaluation=[m1]','trainer.max_epochs=1']",
        *SMALL, *overrides], run_dir)


@pytest.mark.slow  # (~7 s: the default tier stays under 3 minutes; CI runs the slow tier)
def test_m1_m2_trains_on_real_mnist(data_dir, tmp_path):
    """S+N: a vMF M1 (trained first, in the job) and a Gaussian M2 with the vMF likelihood of z1."""
    run_dir = tmp_path / "m1m2"
    metrics = train(_m1m2(data_dir, run_dir, "combination=sn", "m1.latent.dim=5", "latent.dim=5"))
    m1 = results(run_dir / "m1")
    assert m1["config"]["latent"]["_target_"].endswith("VonMisesFisherLatent") and m1["config"]["latent"]["dim"] == 5
    assert m1["global_step"] == 30  # the M1 trains under the job's step limit, for its own epochs
    res = results(run_dir)
    assert res["global_step"] == 60 and res["config"]["latent"]["_target_"].endswith("GaussianLatent")
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["test/accuracy"] <= 1.0
    rows = [r for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("train/loss")]
    losses = [float(r["train/loss"]) for r in rows]
    assert len(losses) == 2 and losses[1] < losses[0]

    # a second M2 on the same M1 checkpoint: loaded, not retrained
    ckpt = run_dir / "m1" / "checkpoints" / "best.ckpt"
    again = tmp_path / "again"
    train(_m1m2(data_dir, again, "combination=ss", "m1.latent.dim=5", "latent.dim=3", f"m1.ckpt_path={ckpt}",
                "trainer.max_epochs=1"))
    assert not (again / "m1").exists() and results(again)["global_step"] == 30

    # eval.py's M1 evaluator refuses an M2 checkpoint (its codes are not labelled splits of images)
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    eval_cfg = compose_config("eval", [f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", "evaluation=[m1]",
                                       "evaluation.m1.labels=[100]"], tmp_path / "ev")
    with pytest.raises(ConfigError, match=r"evaluation.m1 \(M1Accuracy\) needs .*M2Module does not provide Embeds"):
        evaluate(eval_cfg)


def test_m2_refuses_a_missing_m1_checkpoint(data_dir, tmp_path):
    missing = tmp_path / "nowhere" / "best.ckpt"
    cfg = _m1m2(data_dir, tmp_path / "r", "combination=nn", "m1.latent.dim=10", f"m1.ckpt_path={missing}")
    # (Hydra's instantiate wraps the data module's errors, keeping their message)
    with pytest.raises((FileNotFoundError, InstantiationException)) as err:
        train(cfg)
    assert str(missing) in str(err.value) and "GaussianLatent(dim=10)" in str(err.value)


def test_m2_refuses_an_m1_with_another_latent(m1_run, data_dir, tmp_path):
    ckpt = m1_run / "checkpoints" / "best.ckpt"  # a Gaussian d = 5 M1
    for overrides, expected in ((["combination=nn", "m1.latent.dim=10"], "GaussianLatent(dim=10)"),
                                (["combination=ss", "m1.latent.dim=5"], "VonMisesFisherLatent(dim=5)")):
        cfg = _m1m2(data_dir, tmp_path / expected, *overrides, f"m1.ckpt_path={ckpt}")
        with pytest.raises((ConfigError, InstantiationException)) as err:
            train(cfg)
        message = str(err.value)
        assert str(ckpt) in message and "GaussianLatent(dim=5)" in message and expected in message
