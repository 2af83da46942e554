"""The training framework end to end: config composition, fast_dev_run of every combination,
outputs, resume, evaluation, and refusal of bad input."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from hsvae.utils.errors import ConfigError
from hsvae.cli.registry import latent_families
from hsvae.cli.evaluate import evaluate
from hsvae.cli.train import train
from hsvae.data import DatasetNotFoundError
from hsvae.training import NonFiniteLossError

from tests.conftest import FAST, compose_config

REPO = Path(__file__).resolve().parents[1]
LATENTS = latent_families()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.parametrize("latent", LATENTS)
def test_fast_dev_run_synthetic(compose_train, latent):
    cfg = compose_train([f"latent={latent}", "+trainer.fast_dev_run=true", *FAST])
    metrics = train(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert {"test/elbo", "test/log_likelihood", "val/elbo"} <= set(metrics)


@pytest.mark.parametrize("latent", LATENTS)
def test_fast_dev_run_mnist(compose_train, data_dir, latent):
    cfg = compose_train(
        [f"latent={latent}", "dataset=mnist", f"paths.data_dir={data_dir}", "+trainer.fast_dev_run=true",
         "evaluation.ll.samples=5", *FAST]
    )
    metrics = train(cfg)
    # an untrained Bernoulli model scores about -784 log 2 = -543 nats; one step cannot do much better
    assert -1000 < metrics["test/elbo"] < 0


def test_embedded_default_writes_outputs(tmp_path):
    """`python train.py` (two epochs here): results.json, checkpoints and a latent-space plot."""
    run_dir = tmp_path / "default"
    proc = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "trainer.max_epochs=2"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = results(run_dir)
    assert res["config"]["latent"]["_target_"].endswith("VonMisesFisherLatent")
    assert res["config"]["dataset"]["_target_"].endswith("SyntheticSphereDataModule")
    assert res["seed"] == 0 and res["wall_time_s"] > 0 and "cpu_count" in res["hardware"]
    assert {"best/val_elbo", "test/elbo", "test/log_likelihood"} <= set(res["metrics"])
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "plots" / "latent_final.png").stat().st_size > 1000
    assert "hsvae results" in proc.stdout  # the final metrics table


def test_resume_completes_with_same_step_count(tmp_path):
    common = ["latent=gaussian", "callbacks.early_stopping=null", "dataset.n_train=640", *FAST]
    full = compose_config("train", [*common, "trainer.max_epochs=3"], tmp_path / "full")
    train(full)
    full_steps = results(tmp_path / "full")["global_step"]
    assert full_steps == 3 * 10

    # "interrupted" after one epoch, then resumed from its last checkpoint to the same 3 epochs
    part = compose_config("train", [*common, "trainer.max_epochs=1"], tmp_path / "part")
    train(part)
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    assert results(tmp_path / "part")["global_step"] == 10
    resumed = compose_config("train", [*common, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "resumed")
    train(resumed)
    assert results(tmp_path / "resumed")["global_step"] == full_steps
    assert results(tmp_path / "resumed")["epochs"] == 3


def test_eval_on_saved_checkpoint(tmp_path):
    cfg = compose_config("train", ["latent=gaussian", "trainer.max_epochs=1", "dataset.n_train=640", *FAST], tmp_path / "run")
    train(cfg)
    trained = results(tmp_path / "run")["metrics"]
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    # the training run's config is found next to the checkpoint (<run>/.hydra/config.yaml, written by train)
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    eval_cfg = compose_config("eval", [f"ckpt_path={ckpt}"], tmp_path / "eval")
    metrics = evaluate(eval_cfg)
    # the same model, data and seed: the test stage draws the same Monte-Carlo samples, so every number agrees
    for key, value in trained.items():
        if key.startswith("test/"):
            assert metrics[key] == pytest.approx(value, rel=1e-6), key
    more = evaluate(compose_config("eval", [f"ckpt_path={ckpt}", "evaluation=[ll]",
                                                   "evaluation.ll.samples=50"], tmp_path / "eval50"))
    # importance sampling with 50 samples bounds log p(x) more tightly than the ELBO (up to MC noise)
    assert more["test/log_likelihood"] >= more["test/elbo"] - 0.5
    assert "test/knn_accuracy" not in more  # the evaluators chosen, not the run's
    assert results(tmp_path / "eval")["checkpoint"] == str(ckpt)


# -- bad input ---------------------------------------------------------------------------------------


def test_unknown_choice_lists_the_options(compose_train):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose_train(["latent=wrapped_normal"])
    message = str(err.value)
    assert "wrapped_normal" in message and "vmf" in message and "spcauchy" in message


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("latent.dim=0", "latent.dim"),
        ("dataset.batch_size=0", "dataset.batch_size"),
        ("model.optimizer.lr=-0.001", "model.optimizer.lr"),
        ("evaluation.ll.samples=-1", "evaluation.ll.samples"),
    ],
)
def test_invalid_values_refused_before_training(compose_train, tmp_path, override, fragment):
    cfg = compose_train([override, *FAST])
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_mnist_names_directory_and_files(compose_train, tmp_path):
    empty = tmp_path / "no_data"
    cfg = compose_train(["dataset=mnist", f"paths.data_dir={empty}", "dataset.download=false", *FAST])
    with pytest.raises(DatasetNotFoundError) as err:
        train(cfg)
    message = str(err.value)
    assert str(empty / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message


@pytest.mark.parametrize("defer", [False, True], ids=["checked at the step (CPU)", "deferred (accelerators)"])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(compose_train, tmp_path, monkeypatch, defer):
    """A NaN from the 26th forward (validation's included: global step 22, in epoch 2 of 10 steps each) stops training with the step and the terms named;
    last.ckpt is epoch 1's. Deferred as on a GPU: the check before validation catches it, before any checkpoint of
    the poisoned epoch is written."""
    cfg = compose_train(["latent=gaussian", "trainer.max_epochs=3", "dataset.n_train=640", *FAST])
    from hsvae.models import VAE
    from hsvae.training.finite_guard import FiniteLossGuard

    monkeypatch.setattr(FiniteLossGuard, "__init__", functools.partialmethod(FiniteLossGuard.__init__, defer=defer))

    original = VAE.forward
    calls = {"n": 0}

    def poisoned(self, x):
        terms = original(self, x)
        calls["n"] += 1
        if calls["n"] > 25 and self.training:  # epoch 1 (10 steps) and its checkpoint are fine
            terms.reconstruction = terms.reconstruction * float("nan")
        return terms

    monkeypatch.setattr(VAE, "forward", poisoned)
    found = r"; found when checking steps 20-29" if defer else ""
    with pytest.raises(NonFiniteLossError, match=rf"global step 22 \(epoch 2, batch 2{found}\): loss=nan, "
                                                 r"reconstruction=nan"):
        train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 20
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    record = json.loads((tmp_path / "run" / "results.json").read_text())  # no metrics: the failure and its reason
    assert record["status"] == "failed" and "reconstruction=nan" in record["reason"] and not record.get("metrics")


def test_existing_results_are_not_overwritten(compose_train, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"keep": true}')
    cfg = compose_train(["+trainer.fast_dev_run=true", *FAST])
    with pytest.raises(FileExistsError, match="allow_overwrite"):
        train(cfg)
    assert json.loads((out / "results.json").read_text()) == {"keep": True}


def test_a_checkpoint_save_that_dies_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """AtomicCheckpointIO: a save killed half-way (here: torch.save raising after writing part of the file)
    leaves the previous checkpoint byte-identical and no temporary file; a finished save replaces it whole,
    readable by others (0o666 less the umask, not mkstemp's 0o600)."""
    from hsvae.training.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(before[: len(before) // 2])
        raise KeyboardInterrupt  # as a SIGINT or a requeue's signal would

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(4)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]

    monkeypatch.setattr(torch, "save", real_save)
    io.save_checkpoint({"epoch": 2, "w": torch.zeros(4)}, path)
    assert io.load_checkpoint(path)["epoch"] == 2
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_enable_progress_bar_false_turns_the_bar_callback_off(compose_train, tmp_path):
    """``+trainer.enable_progress_bar=false`` alone (the callbacks group's bar still configured) is what a user
    types to silence a run; Lightning would refuse the pair, so the bar callback is left out."""
    cfg = compose_train(["+trainer.enable_progress_bar=false", "+trainer.fast_dev_run=true"])
    assert cfg.callbacks.progress_bar is not None
    train(cfg)
    assert (tmp_path / "run" / "results.json").is_file()


def test_every_latent_family_builds_from_its_config_file():
    """The registry the tests and scripts read: each option of conf/latent/ (the plain autoencoder's aside, which
    has no prior) builds a family of the requested intrinsic dimension: d coordinates in R^d, d + 1 on S^d, d + K
    on a product of K spheres, each of its unit blocks (``spheres``) of norm 1."""
    from hsvae.cli.registry import build_latent, group_options

    assert set(LATENTS) == set(group_options("latent")) - {"deterministic"} and len(LATENTS) >= 4
    for name in LATENTS:
        family = build_latent(name, 3)
        z = family.posterior(torch.randn(5, family.raw_size)).rsample()
        assert z.shape[-1] == family.event_size == 3 + len(family.spheres), (name, z.shape)
        for block in z.split(family.spheres, dim=-1) if family.spheres else ():
            torch.testing.assert_close(block.norm(dim=-1), torch.ones(5))
    with pytest.raises(ValueError, match="unknown latent family 'vfm'.*vmf"):
        build_latent("vfm", 3)


def test_config_targets_are_checked_by_type():
    """eval.py's M1 options and the M1 loader accept VAE checkpoints: a subclass test, where the earlier name test
    ("...VAEModule") also took the SMILES module."""
    from omegaconf import OmegaConf

    from hsvae.cli.instantiation import targets
    from hsvae.training import VAEModule

    assert targets(OmegaConf.create({"_target_": "hsvae.training.VAEModule"}), VAEModule)
    assert not targets(OmegaConf.create({"_target_": "hsvae.training.SMILESVAEModule"}), VAEModule)
    assert not targets(OmegaConf.create({"_target_": "hsvae.training.Nowhere"}), VAEModule)
    assert not targets(None, VAEModule)


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted"), (ValueError("bad"), "failed")])
def test_train_and_eval_record_a_failure_the_same_way(tmp_path, error, status):
    """recording_failures (train.py and eval.py): the run's results.json says failed or interrupted, the log holds
    the traceback, and the error goes on (printed once, with the same classification)."""
    import json

    from omegaconf import OmegaConf

    from hsvae.cli.failures import classify, recording_failures

    with pytest.raises(type(error)), recording_failures(tmp_path, "eval.log", OmegaConf.create({"seed": 0})):
        raise error
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == status and "Traceback" in (tmp_path / "eval.log").read_text()
    code, message = classify(error)
    # (an interruption's line also says how to continue the run)
    assert error.hsvae_outcome[0] == code and error.hsvae_outcome[1].startswith(message)
    assert error.hsvae_recorded == str(tmp_path)
