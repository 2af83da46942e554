"""Mixed precision and compilation of the training step, from the command line's keys.

``trainer.precision=bf16-mixed`` trains the MNIST VAE with every latent family (the registry's; the vMF in the
default data tier, the rest in the slow tier) on the CPU: the epoch's statistics are finite and the model learns
(the validation ELBO far above an untrained model's, about -543 nats). ``compile=true`` compiles the VAE's
forward pass and trains to the same numbers as eager execution from the same seed (the spherical Cauchy: no
rejection sampler; compile=true has inductor draw with torch's generator, so the noise is eager's), with the
checkpoint's parameter names unchanged.
"""

from __future__ import annotations

import math

import pytest
import torch

from hsvae.cli.registry import latent_families
from hsvae.cli.train import train
from tests.conftest import FAST

def _mnist_few_batches(batches: int, eval_samples: int) -> list[str]:
    """A few MNIST batches; the test log-likelihood with ``eval_samples`` samples (0: no evaluator at all)."""
    evaluation = ["evaluation=[ll]", f"evaluation.ll.samples={eval_samples}"] if eval_samples else ["evaluation=[]"]
    return ["dataset=mnist", "trainer.max_epochs=1", f"+trainer.limit_train_batches={batches}",
            "+trainer.limit_val_batches=5", "+trainer.limit_test_batches=2", "model.warmup_epochs=0",
            *evaluation, *FAST]


@pytest.mark.parametrize("latent", [pytest.param(name, marks=[] if name == "vmf" else [pytest.mark.slow])
                                    for name in latent_families()])
def test_bf16_mixed_trains_the_mnist_vae_with_every_latent(compose_train, data_dir, latent):
    cfg = compose_train([f"latent={latent}", "latent.dim=5", "trainer.precision=bf16-mixed",
                         f"paths.data_dir={data_dir}", *_mnist_few_batches(60, 5)])
    metrics = train(cfg)
    for key in ("train/loss", "val/elbo", "val/kl", "test/elbo", "test/log_likelihood"):
        assert math.isfinite(metrics[key]), (key, metrics)
    assert metrics["val/elbo"] > -300, metrics


@pytest.mark.slow
def test_compile_true_trains_to_the_eager_numbers(compose_train, data_dir, tmp_path):
    common = ["latent=spcauchy", "latent.dim=5", f"paths.data_dir={data_dir}", *_mnist_few_batches(20, 0)]
    eager = train(compose_train(common, "eager"))
    compiled = train(compose_train([*common, "compile=true"], "compiled"))
    for key in ("train/loss", "val/elbo", "test/elbo"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), key
    (checkpoint, *_) = sorted((tmp_path / "compiled" / "checkpoints").glob("*.ckpt"))
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert any(k.startswith("net.encoder.") for k in state) and not any("_orig_mod" in k for k in state)
