"""Feedback during long phases and what a run tells its user: phase progress bars (the importance-sampled
log-likelihood, SMILES decoding, make_tables), the start banner, results.json's file mode, the outputs line,
make_tables' unknown metrics, and the labels of the latent and reconstruction figures."""

from __future__ import annotations

import json
import os
import stat

import matplotlib
import pytest
import pytorch_lightning as pl
import torch
import yaml
from omegaconf import open_dict

matplotlib.use("Agg")

from hsvae.cli.banner import start_banner  # noqa: E402
from hsvae.cli.report import output_contents, print_metrics  # noqa: E402
from hsvae.analysis.tables import main as make_tables  # noqa: E402
from hsvae.cli.train import train  # noqa: E402
from hsvae.latents import GaussianLatent, VonMisesFisherLatent  # noqa: E402
from hsvae.models import SMILESVAE  # noqa: E402
from hsvae.utils import progress as progress_module  # noqa: E402
from hsvae.utils.io import new_file_mode, write_json_atomic  # noqa: E402
from hsvae.utils.plotting import image_rows, plot_latent  # noqa: E402
from hsvae.utils.progress import PhaseProgress, format_duration, progress_enabled, track  # noqa: E402

from tests.conftest import FAST  # noqa: E402

SMALL = ["dataset.n_train=320", "dataset.n_val=100", "dataset.n_test=100", "trainer.max_epochs=1",
         "+trainer.enable_model_summary=false"]


@pytest.fixture
def terminal(monkeypatch):
    """Pretend stderr is a terminal (pytest captures it, which turns every bar off)."""
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)


# -- the progress helper ---------------------------------------------------------------------------------------
def test_progress_is_off_without_a_terminal():
    assert not progress_enabled()
    bar = PhaseProgress("work", total=3)
    assert not bar.shown
    bar.advance()  # no-ops, but the count is kept
    bar.close()
    assert bar.completed == 1
    assert list(track([1, 2, 3], "items")) == [1, 2, 3]


def test_progress_follows_the_runs_progress_bar(terminal):
    assert progress_enabled()  # a command-line tool on a terminal
    assert not progress_enabled(pl.Trainer(enable_progress_bar=False, logger=False))  # enable_progress_bar=false
    assert progress_enabled(pl.Trainer(logger=False))  # Lightning's own (tqdm) bar
    # the tqdm bar of a run without a rich bar: shown on stderr, cleared at the end
    with PhaseProgress("work", total=4, trainer=pl.Trainer(logger=False)) as bar:
        assert bar.shown and bar._backend == "tqdm"
        bar.update(2.5)
        bar.advance(1.5)
    assert not bar.shown


def test_progress_of_a_command_line_tool(terminal, capsys):
    with PhaseProgress("reading runs", total=2) as bar:
        assert bar._backend == "rich"
        bar.advance()
        assert bar.eta_text(1).startswith("eta 0:00:0")
        bar.advance()
    assert capsys.readouterr().out == ""  # never on stdout
    assert bar.eta_text(0) == "" and PhaseProgress("x", None).eta_text(1) == ""
    assert format_duration(3723.4) == "1:02:03"


def test_log_likelihood_progress_joins_the_runs_rich_bar(compose_train, terminal, monkeypatch):
    """The importance-sampled test log-likelihood: one more task in the run's RichProgressBar, moved by chunks of
    samples, complete at the end and removed afterwards; the metric is the same as without it."""
    from hsvae.evaluation import log_likelihood

    bars: list[PhaseProgress] = []

    class Recording(PhaseProgress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.trace, self.finished_at = [], None
            bars.append(self)

        def update(self, completed):
            super().update(completed)
            self.trace.append(completed)

        def close(self):
            if self.shown and self.finished_at is None:
                self.finished_at = self.completed
                self.bar_tasks = list(self._handle.progress.task_ids)
                self.task = self._task
            super().close()
            if self._handle is not None and hasattr(self._handle, "progress") and self._handle.progress is not None:
                self.tasks_after = list(self._handle.progress.task_ids)

    monkeypatch.setattr(log_likelihood, "PhaseProgress", Recording)
    overrides = [*SMALL, "evaluation.ll.samples=250", "dataset.eval_batch_size=50", "callbacks.early_stopping=null"]
    shown = train(compose_train(overrides, "shown"))
    (bar,) = [b for b in bars if b.finished_at is not None]
    assert bar._handle.__class__.__name__ == "RichProgressBar"
    assert bar.total == 2 and bar.finished_at == pytest.approx(2.0)
    assert len(bar.trace) == 2 * (3 + 1)  # 3 chunks (100, 100, 50 samples) and the batch's end, per batch
    assert bar.trace == sorted(bar.trace)
    assert bar.task in bar.bar_tasks and bar.task not in bar.tasks_after

    bars.clear()
    quiet = [o for o in overrides if not o.startswith("+trainer.enable_model_summary")] + FAST
    hidden = train(compose_train(quiet, "hidden"))
    assert bars and not any(b.shown for b in bars)
    assert hidden["test/log_likelihood"] == pytest.approx(shown["test/log_likelihood"])


def test_log_likelihood_reports_its_chunks():
    from hsvae.models import VAE, GaussianLikelihood, MLPDecoder, MLPEncoder

    torch.manual_seed(0)
    net = VAE(MLPEncoder(5, [8]), lambda in_features: MLPDecoder(in_features, 5, [8]), VonMisesFisherLatent(2),
              GaussianLikelihood())
    x = torch.randn(4, 5)
    chunks: list[int] = []
    torch.manual_seed(1)
    with_progress = net.log_likelihood(x, 250, on_chunk=chunks.append)
    torch.manual_seed(1)
    without = net.log_likelihood(x, 250)
    assert chunks == [100, 100, 50]
    assert torch.equal(with_progress, without)


def test_smiles_generation_reports_its_steps():
    torch.manual_seed(0)
    net = SMILESVAE(GaussianLatent(4), 12, 15, embed_dim=16, num_heads=2, num_layers=1, ff_dim=32, dropout=0.0,
                    memory_tokens=2).eval()
    z = torch.randn(5, 4)
    fractions: list[float] = []
    out = net.generate(z, on_step=fractions.append)
    assert torch.equal(out, net.generate(z))
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert all(0 < f <= 1 for f in fractions) and len(fractions) == out.shape[1]


# -- the start banner -------------------------------------------------------------------------------------------
def test_start_banner_of_the_default_run(compose_train, tmp_path):
    text = start_banner(compose_train([]))
    assert text.splitlines()[0] == "hsvae train (seed 0)"
    assert "VonMisesFisher, d=2: S^2 in R^3" in text
    assert "SyntheticSphere (dataset=synthetic)" in text and "VAEModule: VAE, MLPEncoder (model=mlp_vae)" in text
    assert "at most 20 epochs; early stopping on val/elbo (max), patience" in text
    assert "cpu, 1 device" in text and str(tmp_path / "run") in text
    assert "  evaluation ll, knn, geometry\n" in text  # the task's evaluators
    assert "resume" not in text


def test_start_banner_gaussian_resume_and_devices(compose_train):
    text = start_banner(compose_train(["latent=gaussian", "latent.dim=10", "dataset=mnist", "trainer=gpu",
                                       "callbacks.early_stopping=null", "ckpt_path=/runs/a/checkpoints/last.ckpt"]))
    assert "Gaussian, d=10: R^10" in text and "S^" not in text
    assert "MNIST (dataset=mnist)" in text and "at most 1000 epochs; no early stopping" in text
    assert "gpu, 1 device" in text and "resume     /runs/a/checkpoints/last.ckpt" in text
    ddp = start_banner(compose_train(["trainer=ddp", "+trainer.fast_dev_run=true"], "ddp"))
    assert "strategy=ddp" in ddp and "2 devices" in ddp and "fast_dev_run" in ddp


def test_start_banner_of_m1_m2_and_of_an_evaluation(compose_train):
    text = start_banner(compose_train(["experiment=semisupervised_table", "combination=sn"]))
    assert "hsvae semisupervised_table" in text and "M2Module: M2 (model=m2)" in text
    assert "Gaussian, d=5: R^5" in text and "M1         VonMisesFisher, d=5: S^5 in R^6 (trained first" in text
    assert "early stopping on val/accuracy (max), patience 50" in text and "  evaluation none\n" in text
    cfg = compose_train([], "eval")
    cfg.task_name = "eval"
    text = start_banner(cfg, ckpt_path="/runs/a/checkpoints/best.ckpt")
    assert "none: tests the checkpoint" in text and "checkpoint /runs/a/checkpoints/best.ckpt" in text
    # inside the Hydra app (no hydra node in the config, e.g. the M1 of an M1+M2 job): class names only
    with open_dict(cfg):
        del cfg["hydra"]
    assert "  data       SyntheticSphere\n  model      VAEModule: VAE, MLPEncoder\n" in start_banner(cfg)


# -- results.json, the outputs line, make_tables -----------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_results_are_written_with_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert new_file_mode() == 0o666 & ~umask
        write_json_atomic(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "results.json").stat().st_mode) == 0o666 & ~umask
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_outputs_line_lists_what_the_run_wrote(tmp_path, capsys):
    write_json_atomic(tmp_path / "results.json", {})
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "eval.log").write_text("")
    print_metrics({"test/elbo": -1.0}, tmp_path)
    out = capsys.readouterr().out
    assert "(results.json, eval.log)" in out and "checkpoints/" not in out and "plots/" not in out
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "plots").mkdir()
    assert output_contents(tmp_path) == ["results.json", "checkpoints/", "eval.log", "plots/"]
    assert output_contents(tmp_path, limit=2) == ["results.json", "checkpoints/", "... 2 more"]


def _job(root, name, overrides, metrics):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (d / "results.json").write_text(json.dumps({"format": 1, "metrics": metrics, "config": {}}))


def test_make_tables_refuses_unknown_metrics(tmp_path, capsys):
    _job(tmp_path, "0", ["seed=0"], {"test/elbo": -1.0, "test/kl": 2.0})
    _job(tmp_path, "1", ["seed=1"], {"test/elbo": -2.0})
    assert make_tables([str(tmp_path), "--metrics", "test/nope"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "test/nope" in lines[0] and "test/elbo, test/kl" in lines[0]
    assert captured.out == ""
    assert make_tables([str(tmp_path), "--metrics", "test/elbo", "test/nope", "test/gone"]) == 2
    assert "metrics test/nope, test/gone" in capsys.readouterr().err
    assert make_tables([str(tmp_path), "--metrics", "test/kl"]) == 0  # present in one run: known


# -- figures --------------------------------------------------------------------------------------------------
def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box, frame = artist.get_window_extent(), fig.bbox
    return box.x0 >= frame.x0 - 1 and box.x1 <= frame.x1 + 1 and box.y0 >= frame.y0 - 1 and box.y1 <= frame.y1 + 1


@pytest.mark.parametrize("k,spherical,xlabel", [(17, True, "PC 1 of 17 coordinates"), (16, False, "PC 1 of 16"),
                                                (2, False, "z1"), (2, True, "z1"), (3, True, "longitude")])
def test_latent_plot_is_labelled_and_its_title_fits(tmp_path, k, spherical, xlabel):
    points = torch.randn(300, k)
    if spherical:
        points = torch.nn.functional.normalize(points, dim=-1)
    title = "latent means: VonMisesFisher, S^16 in R^17"
    fig = plot_latent(points, torch.randint(0, 7, (300,)), spherical, title=title)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith(xlabel) and ax.get_ylabel()
    assert ax.get_title() == title and _inside(fig, ax.title)
    assert _inside(fig, ax.xaxis.label) and _inside(fig, ax.yaxis.label)
    fig.savefig(tmp_path / "latent.png")


def test_reconstruction_rows_are_labelled():
    x = torch.rand(20, 1, 28, 28)
    fig = image_rows([("validation\nimages", x), ("reconstructions", x.flip(-1))], nrow=16, title="reconstructions")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["validation\nimages", "reconstructions"]
    # each group starts on its own row: 2 rows of originals (16 + 4), then 2 of reconstructions
    assert ax.get_images()[0].get_array().shape == (4 * 29, 16 * 29)
    assert all(_inside(fig, t) for t in ax.get_yticklabels()) and _inside(fig, ax.title)
