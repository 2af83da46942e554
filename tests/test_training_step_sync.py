"""A training step reads nothing back from the device, and a non-finite loss still stops training by name.

The MNIST VAE and the VGAE of the papers' protocols (composed from the real configs) run one whole training
step on ``meta`` tensors: forward, loss, the non-finite-loss check, the epoch statistics (the modules' logging),
backward and the optimiser's step. A meta tensor has a shape but no data, so any host read (``.item()``,
``bool(tensor)``, a data-dependent shape) raises: a step that completes here has none, which on a GPU means no
stall per step. :class:`~hsvae.training.finite_guard.FiniteLossGuard`'s deferred check is tested on the CPU with
``defer=True``.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch

from hsvae.cli.registry import latent_families
from hsvae.data.links import LinkSplit
from hsvae.models.vgae import encoder_features, gcn_normalized_adjacency
from hsvae.training import NonFiniteLossError
from hsvae.training.finite_guard import FiniteLossGuard
from tests.conftest import compose_config

META = torch.device("meta")


pytestmark = pytest.mark.usefixtures("no_argument_validation")


def _optimizer(module) -> torch.optim.Optimizer:
    optimizers = module.configure_optimizers()
    if isinstance(optimizers, dict):
        optimizers = optimizers["optimizer"]
    return optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers


def _whole_step(module, batch) -> torch.Tensor:
    optimizer = _optimizer(module)
    loss = module.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss


def _module(tmp_path: Path, overrides: list[str]):
    cfg = compose_config("train", overrides, tmp_path / "run")
    return hydra.utils.instantiate(cfg.model)


def test_the_detector_detects_a_host_read():
    with pytest.raises(RuntimeError, match="meta"):
        bool(torch.isfinite(torch.zeros((), device=META)))


@pytest.mark.parametrize("latent", latent_families())
def test_mnist_vae_step_has_no_host_read(tmp_path, latent):
    """d = 4: S^4 in R^5, where the Power Spherical sampler needs no Gamma draw (whose gradient has no meta kernel;
    tests/distributions/test_no_host_sync.py)."""
    # (no data here: the input size train.py reads from the data module is given)
    module = _module(tmp_path, ["dataset=mnist", f"latent={latent}", "latent.dim=4", "data_spec.input_dim=784"]).to(META)
    x = torch.empty(64, 784, device=META)
    for _ in range(2):  # the second step runs the optimiser with its state
        loss = _whole_step(module, (x, torch.empty(64, dtype=torch.long, device=META)))
    assert loss.device == META and loss.shape == ()
    assert set(module._train_stats.means()) == {"loss", "reconstruction", "kl"}


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_smiles_vae_step_has_no_host_read(tmp_path, latent):
    """The SMILES VAE (a small Transformer, the zinc250k task): the loader cut the padding on the host, so the
    step itself reads nothing back."""
    from functools import partial

    from hsvae.cli.registry import build_latent
    from hsvae.models import SMILESVAE
    from hsvae.training import SMILESVAEModule

    net = SMILESVAE(build_latent(latent, 4), vocab_size=20, max_length=30, embed_dim=16, num_heads=2, num_layers=1,
                    ff_dim=32)
    module = SMILESVAEModule(net, partial(torch.optim.Adam, lr=1e-3), warmup_epochs=1.0, final_beta=0.5).to(META)
    tokens = torch.empty(8, 12, dtype=torch.long, device=META)
    for _ in range(2):
        loss = _whole_step(module, (tokens, torch.empty(8, dtype=torch.long, device=META)))
    assert loss.device == META and loss.shape == ()
    assert set(module._train_stats.means()) == {"loss", "reconstruction", "kl", "correct", "tokens"}


@pytest.mark.parametrize("latent", ["gaussian", "vmf"])
def test_vgae_step_has_no_host_read(tmp_path, latent):
    """The VGAE on Cora's protocol (16-dimensional inputs here). The graph's inputs (features and normalised
    adjacency, computed once per run, not per step) are made on the CPU and moved, dense, to the meta device."""
    module = _module(tmp_path, ["dataset=cora", f"latent={latent}", "data_spec.input_dim=16"]).to(META)
    n, g = 30, torch.Generator().manual_seed(0)
    pairs = torch.combinations(torch.arange(n)).T
    edges = pairs[:, torch.randperm(pairs.shape[1], generator=g)[:60]]
    x = (torch.rand(n, 16, generator=g) < 0.3).float()
    graph = LinkSplit(x, torch.zeros(n, dtype=torch.long), edges[:, 20:], edges[:, :10], edges[:, :10],
                      edges[:, 10:20], edges[:, 10:20])
    features = encoder_features(graph.x)  # sparse below half density: dense here (meta has no sparse kernels)
    features = features.to_dense() if features.layout != torch.strided else features
    adjacency = gcn_normalized_adjacency(graph.message_passing_edges(), n).to_dense()
    meta_graph = graph.to(META)
    meta_graph._cache.update({"vgae/features": features.to(META), "vgae/adjacency": adjacency.to(META)})
    module.log_dict = lambda *args, **kwargs: None  # Lightning's logging needs a trainer; it accumulates on device
    for _ in range(2):
        loss = _whole_step(module, meta_graph)
    assert loss.device == META and loss.shape == ()


# -- the deferred check (what an accelerator does), on the CPU ------------------------------------------------------


def _observe(guard: FiniteLossGuard, step: int, loss: float) -> None:
    loss_t = torch.tensor(loss)
    guard.observe({"loss": loss_t, "reconstruction": loss_t * 2, "kl": torch.tensor(0.5)}, step, 3, step - 100,
                  beta=0.25)


def test_deferred_check_names_the_first_bad_step_and_its_terms():
    guard = FiniteLossGuard("Lower the learning rate.", defer=True)
    for step, loss in [(110, 1.0), (111, 2.0), (112, math.nan), (113, math.inf), (114, 1.0)]:
        _observe(guard, step, loss)  # nothing raised while recording
    with pytest.raises(NonFiniteLossError) as err:
        guard.check()
    message = str(err.value)
    assert "global step 112 (epoch 3, batch 12; found when checking steps 110-114)" in message
    assert "loss=nan, reconstruction=nan, kl=0.5, beta=0.25" in message and message.endswith("Lower the learning rate.")
    guard.check()  # the record was cleared: a second check finds nothing


def test_deferred_check_of_finite_steps_passes_and_starts_a_new_window():
    guard = FiniteLossGuard("hint", defer=True)
    for step in range(5):
        _observe(guard, step, 1.0)
    guard.check()
    _observe(guard, 5, math.inf)
    with pytest.raises(NonFiniteLossError, match=r"global step 5 .*checking steps 5-5\): loss=inf"):
        guard.check()


def test_on_the_cpu_the_check_is_at_the_step():
    guard = FiniteLossGuard("hint")
    _observe(guard, 7, 1.0)
    with pytest.raises(NonFiniteLossError, match=r"global step 8 \(epoch 3, batch -92\): loss=nan"):
        _observe(guard, 8, math.nan)
