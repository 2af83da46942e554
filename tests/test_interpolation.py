"""Latent interpolation: slerp stays on the sphere at constant speed along the great circle, the straight line
for Gaussian latents, decoded paths, the callback's PNG and W&B image, and the interpolate script."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from hsvae.cli.interpolate import main as interpolate_main
from hsvae.cli.train import train
from hsvae.evaluation.interpolation import decode_interpolations, latent_path, lerp, slerp
from hsvae.latents import GaussianLatent, SphericalCauchyLatent
from hsvae.models import VAE, BernoulliLikelihood, ConvDecoder, ConvEncoder
from tests.support.wandb_offline import read_offline_run
from tests.conftest import FAST


def unit(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def angle(x, y):
    """Angle between unit vectors, accurate at every angle (atan2 of the sine and cosine)."""
    return torch.atan2(torch.linalg.vector_norm(x - (x * y).sum(-1, keepdim=True) * y, dim=-1), (x * y).sum(-1))


@pytest.mark.parametrize("m", [2, 3, 17, 129])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_is_the_constant_speed_great_circle(m, dtype):
    a, b = unit(64, m, dtype=dtype, seed=1), unit(64, m, dtype=dtype, seed=2)
    t = torch.linspace(0, 1, 11, dtype=dtype)
    path = slerp(a, b, t)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert path.shape == (11, 64, m)
    assert torch.allclose(path.norm(dim=-1), torch.ones(()).to(dtype), atol=tol)
    assert torch.allclose(path[0], a, atol=tol) and torch.allclose(path[-1], b, atol=10 * tol)
    # every step covers the same angle, omega / 10, so the path has the geodesic's length omega
    omega = angle(a, b)
    steps = angle(path[1:], path[:-1])
    assert torch.allclose(steps, (omega / 10).expand_as(steps), atol=10 * tol)
    # the path stays in the plane spanned by a and b (a great circle)
    basis, _ = torch.linalg.qr(torch.stack([a, b], -1).double())  # (64, m, 2)
    p = path.double()
    residual = p - torch.einsum("bmk,tbk->tbm", basis, torch.einsum("bmk,tbm->tbk", basis, p))
    assert residual.abs().max() < 10 * tol


def test_slerp_matches_the_textbook_formula():
    """The independent form [sin((1 - t) w) a + sin(t w) b] / sin(w), in float64 at moderate angles."""
    a, b = unit(32, 5, seed=3), unit(32, 5, seed=4)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    w = torch.arccos((a * b).sum(-1))
    expected = (torch.sin((1 - t)[:, None, None] * w[:, None]) * a + torch.sin(t[:, None, None] * w[:, None]) * b) / torch.sin(w)[:, None]
    assert torch.allclose(slerp(a, b, t), expected, atol=1e-12)


def test_slerp_of_nearly_equal_and_antipodal_points():
    a = unit(8, 4, seed=5)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    # nearly equal: the textbook formula divides 0 by 0 here
    near = torch.nn.functional.normalize(a + 1e-9 * unit(8, 4, seed=6), dim=-1)
    path = slerp(a, near, t)
    assert torch.isfinite(path).all() and torch.allclose(path, a.expand_as(path), atol=1e-8)
    # antipodal: no unique geodesic; the path is still a constant-speed half circle
    path = slerp(a, -a, t)
    assert torch.allclose(path.norm(dim=-1), torch.ones(()).double(), atol=1e-12)
    assert torch.allclose(path[-1], -a, atol=1e-12)
    assert torch.allclose(angle(path[1:], path[:-1]), torch.full((4, 8), math.pi / 4).double(), atol=1e-9)


def test_lerp_and_latent_path():
    a, b = torch.randn(3, 5, generator=torch.Generator().manual_seed(7)), torch.zeros(3, 5)
    path = latent_path(a, b, 5, spherical=False)
    assert path.shape == (5, 3, 5)
    assert torch.allclose(path[2], a / 2) and torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(path[1:] - path[:-1], (b - a).expand(4, 3, 5) / 4)
    sphere = latent_path(unit(3, 4, dtype=torch.float32), unit(3, 4, dtype=torch.float32, seed=8), 6, spherical=True)
    assert torch.allclose(sphere.norm(dim=-1), torch.ones(6, 3), atol=1e-6)


def test_bad_input_is_refused():
    a, b = unit(4, 3), unit(4, 3, seed=9)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unit vectors"):
        slerp(2 * a, b, t)
    with pytest.raises(ValueError, match="same shape"):
        slerp(a, unit(4, 4), t)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        slerp(a, b, torch.tensor([0.0, 1.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="1-D"):
        lerp(a, b, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps"):
        latent_path(a, b, 1, spherical=True)


@pytest.mark.parametrize("latent", [GaussianLatent(3), SphericalCauchyLatent(3)])
def test_decoded_paths_start_and_end_at_the_reconstructions(latent):
    torch.manual_seed(0)
    net = VAE(ConvEncoder(hidden=32, channels=(4, 8)), lambda in_features: ConvDecoder(in_features, hidden=32, channels=(4, 8)),
              latent, BernoulliLikelihood())
    x = torch.rand(6, 1, 28, 28)
    images = decode_interpolations(net, x[:3], x[3:], steps=4)
    assert images.shape == (3, 4, 1, 28, 28) and net.training  # the training mode is restored
    net.eval()
    with torch.no_grad():
        first = torch.sigmoid(net.decode(net.embed(x[:3]))).reshape(3, 1, 28, 28)
        last = torch.sigmoid(net.decode(net.embed(x[3:]))).reshape(3, 1, 28, 28)
    assert torch.allclose(images[:, 0], first, atol=1e-6) and torch.allclose(images[:, -1], last, atol=1e-5)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """A few steps of experiment=latent_comparison (spCauchy, d = 2) logged to an offline W&B run."""
    from tests.conftest import compose_config

    out = tmp_path_factory.mktemp("interp") / "run"
    mp = pytest.MonkeyPatch()
    mp.delenv("WANDB_API_KEY", raising=False)
    mp.setenv("NETRC", str(out.parent / "no-netrc"))
    mp.setenv("WANDB_SILENT", "true")
    try:
        cfg = compose_config(
            "train",
            ["experiment=latent_comparison", "latent=spcauchy", "latent.dim=2", f"paths.data_dir={data_dir}",
             "logger=wandb", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1",
             "+trainer.limit_test_batches=1", "callbacks.latent_plot=null",
             "callbacks.image_samples=null", "callbacks.interpolation.n_pairs=3", "callbacks.interpolation.steps=5",
             *FAST],
            out,
        )
        train(cfg)
    finally:
        mp.undo()
    return out


def test_callback_writes_png_and_wandb_image(trained_run):
    png = trained_run / "plots" / "interpolation_final.png"
    assert png.stat().st_size > 1000
    runs = sorted((trained_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # W&B's service process may still be writing the offline run file after wandb.finish() returns
    for _ in range(50):
        keys = read_offline_run(runs[0])["history_keys"]
        if "interpolation/path" in keys:
            break
        time.sleep(0.2)
    assert "interpolation/path" in keys
    assert list((runs[0] / "files" / "media" / "images").glob("interpolation_*.png"))


def test_script_decodes_paths_from_a_checkpoint(trained_run, tmp_path, capsys):
    results = json.loads((trained_run / "results.json").read_text())
    ckpt = results["test_checkpoint"] or str(trained_run / "checkpoints" / "last.ckpt")
    out = tmp_path / "paths.png"
    assert interpolate_main([ckpt, "--pairs", "2", "--steps", "4", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert interpolate_main([ckpt, "--indices", "0", "1", "2", "--out", str(out)]) == 2
    assert "even number" in capsys.readouterr().err
    assert interpolate_main([str(tmp_path / "missing.ckpt")]) == 2
