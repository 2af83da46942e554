"""Link prediction end to end through ``train.py``'s code path: short trainings on the real Cora and CiteSeer
files, every latent family, model selection, results.json, the experiment's sweep, and refusal of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from hsvae.utils.errors import ConfigError
from hsvae.cli.registry import latent_families
from hsvae.cli.evaluate import evaluate
from hsvae.cli.train import train
from hsvae.data import DatasetNotFoundError, PlanetoidLinkDataModule, SyntheticSphereDataModule
from hsvae.evaluation import link_metrics
from hsvae.latents import GaussianLatent
from hsvae.models import VGAE
from hsvae.training import LinkPredictionModule
from tests.conftest import FAST, compose_config
from tests.test_link_prediction_data import write_planetoid_fixture

REPO = Path(__file__).resolve().parents[1]
LATENTS = latent_families()


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def graph_run(tmp_path: Path, data_dir: Path, overrides: list[str], name: str = "run"):
    cfg = compose_config(
        "train",
        [f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}", "~logger", *FAST, *overrides],
        tmp_path / name,
    )
    return cfg, train(cfg)


@pytest.mark.parametrize("dataset, latent, epochs", [("cora", "gaussian", 40),
                                                     pytest.param("citeseer", "vmf", 60, marks=pytest.mark.slow)])
def test_short_training_is_far_above_chance(tmp_path, data_dir, dataset, latent, epochs):
    """A short training on the real graph: test AUC and AP far above chance (0.5) and above the untrained
    encoder's (a GCN's smoothing alone scores above chance), reported at the best validation epoch."""
    cfg, metrics = graph_run(tmp_path, data_dir, [f"dataset={dataset}", f"latent={latent}", f"trainer.max_epochs={epochs}"])
    assert cfg.model.net.reconstruction == "all_pairs"
    assert metrics["test/auc"] > 0.85 and metrics["test/ap"] > 0.85, metrics

    # the untrained model on the same split
    torch.manual_seed(0)
    untrained = hydra.utils.instantiate(cfg.model)
    dm = PlanetoidLinkDataModule(dataset, str(data_dir), str(tmp_path / "cache"), download=False, seed=cfg.seed)
    dm.setup()
    before = link_metrics(*untrained.pair_scores(dm.graph, "test"))
    assert metrics["test/auc"] > before["auc"].item() + 0.05

    # the tested model is the best validation epoch's checkpoint; results.json says which epoch and its scores
    res = results(tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=False)
    assert res["metrics"]["best/epoch"] == ckpt["epoch"] == ckpt["link_prediction_best"]["epoch"]
    assert res["metrics"]["best/val_auc_ap"] == pytest.approx((res["metrics"]["best/val_auc"] + res["metrics"]["best/val_ap"]) / 2)
    best_model = LinkPredictionModule(untrained.net, optimizer=torch.optim.Adam)
    best_model.load_state_dict(ckpt["state_dict"])
    best_model.eval()
    val, test = (link_metrics(*best_model.pair_scores(dm.graph, stage)) for stage in ("val", "test"))
    assert res["metrics"]["best/val_auc"] == pytest.approx(val["auc"].item(), abs=1e-6)
    assert res["metrics"]["best/val_ap"] == pytest.approx(val["ap"].item(), abs=1e-6)
    assert res["metrics"]["test/auc"] == pytest.approx(test["auc"].item(), abs=1e-6)
    assert res["metrics"]["test/ap"] == pytest.approx(test["ap"].item(), abs=1e-6)
    assert (tmp_path / "run" / "plots" / "latent_final.png").stat().st_size > 1000
    assert res["config"]["dataset"]["name"] == dataset and res["config"]["latent"]["dim"] == 16


@pytest.mark.parametrize("latent", LATENTS)
def test_every_latent_family_runs_on_cora(tmp_path, data_dir, latent):
    _, metrics = graph_run(tmp_path, data_dir, ["dataset=cora", f"latent={latent}", "trainer.max_epochs=2"])
    assert {"test/auc", "test/ap", "best/val_auc_ap", "best/epoch", "train/loss"} <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


def test_sampled_negatives_option(tmp_path, data_dir):
    cfg, metrics = graph_run(
        tmp_path, data_dir, ["dataset=cora", "latent=gaussian", "model.net.reconstruction=sampled", "trainer.max_epochs=2"]
    )
    assert results(tmp_path / "run")["config"]["model"]["net"]["reconstruction"] == "sampled"
    assert 0.0 <= metrics["test/auc"] <= 1.0


def test_pubmed_runs_on_a_raw_format_fixture(tmp_path):
    write_planetoid_fixture(tmp_path / "data", features=12)
    _, metrics = graph_run(tmp_path, tmp_path / "data", ["dataset=pubmed", "dataset.verify=false", "latent=power_spherical",
                                                         "trainer.max_epochs=3"])
    assert 0.0 <= metrics["test/auc"] <= 1.0 and 0.0 <= metrics["test/ap"] <= 1.0
    # the feature count is read from the graph (12 here, 500 in the real PubMed), and saved with the run
    assert results(tmp_path / "run")["config"]["data_spec"]["input_dim"] == 12
    saved = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert saved.data_spec.input_dim == 12
    # an explicit value that disagrees with the data: a clear message naming the key
    with pytest.raises(ValueError, match="data_spec.input_dim=500, but PlanetoidLinkDataModule gives points of size 12"):
        graph_run(tmp_path, tmp_path / "data", ["dataset=pubmed", "dataset.verify=false", "data_spec.input_dim=500",
                                                "trainer.max_epochs=1"],
                  name="mismatch")


def test_real_pubmed_fails_with_the_missing_file(tmp_path, data_dir):
    with pytest.raises(DatasetNotFoundError, match=r"ind\.pubmed\.allx"):
        graph_run(tmp_path, data_dir, ["dataset=pubmed", "dataset.download=false"])
    record = json.loads((tmp_path / "run" / "results.json").read_text())  # the failed run's record: why, no metrics
    assert record["status"] == "failed" and "ind.pubmed.allx" in record["reason"] and not record.get("metrics")


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, fragment", [("latent.dim=0", "latent.dim"), ("model.optimizer.lr=-0.01", "lr"), ("model.optimizer.lr=0", "lr")]
)
def test_bad_values_are_refused_before_training(tmp_path, data_dir, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        graph_run(tmp_path, data_dir, ["dataset=cora", override])
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_unknown_dataset_lists_the_graphs(tmp_path):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as err:
        compose_config("train", ["dataset=reddit"], tmp_path / "run")
    assert all(name in str(err.value) for name in ("cora", "citeseer", "pubmed"))


def test_vgae_on_a_non_graph_dataset_is_refused(tmp_path):
    cfg = compose_config("train", ["model=vgae", "dataset=synthetic", "~logger", *FAST], tmp_path / "run")
    # the synthetic task selects checkpoints by val/elbo, which a VGAE does not log: named as its config key
    with pytest.raises(ConfigError, match=r"model\.selection_metric must be one of .*got 'val/elbo'"):
        train(cfg)
    # and a data module without graph reaching the module directly
    module = LinkPredictionModule(VGAE(100, GaussianLatent(2)), optimizer=torch.optim.Adam)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="graph data module"):
        trainer.fit(module, datamodule=SyntheticSphereDataModule(n_train=64, n_val=64, n_test=64))


# -- the experiment -------------------------------------------------------------------------------------------------


def test_experiment_sweep_covers_datasets_latents_and_seeds(tmp_path):
    cfg = compose_config("train", ["experiment=link_prediction"], tmp_path / "run")
    params = cfg.hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    values = {o.key_or_group: [str(v) for v in o.sweep_string_iterator()] for o in parsed}
    # the table's families (a new family joins a table's sweep by choice, docs/ARCHITECTURE.md)
    assert set(values.pop("latent")) == {"gaussian", "vmf", "spcauchy", "power_spherical"} <= set(LATENTS)
    assert values == {"dataset": ["cora", "citeseer", "pubmed"], "seed": [str(s) for s in range(10)]}
    # each cell composes to the protocol: the VGAE, 200 epochs, latent size 16, selection on validation AUC/AP
    for dataset in values["dataset"]:
        for latent in LATENTS:  # (every family composes into the protocol, swept or not)
            cell = compose_config("train", ["experiment=link_prediction", f"dataset={dataset}", f"latent={latent}"], tmp_path / "c")
            assert cell.model._target_.endswith("LinkPredictionModule") and cell.dataset.name == dataset
            assert cell.trainer.max_epochs == 200 and cell.latent.dim == 16 and cell.model.optimizer.lr == 0.01
            assert cell.callbacks.model_checkpoint.monitor == cell.model.selection_metric == "val/auc_ap"
            assert cell.callbacks.early_stopping is None


@pytest.mark.slow  # (a multirun in subprocesses, ~7 s: the default tier stays under 3 minutes)
def test_narrowed_multirun_runs_only_the_chosen_cells(tmp_path, data_dir):
    """The README's command form: command-line choices replace the experiment's sweep for those keys."""
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "experiment=link_prediction", "dataset=cora", "latent=gaussian", "seed=3",
         "trainer.max_epochs=1", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={sweep}", "callbacks.latent_plot=null"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert [p.name for p in jobs] == ["0"]
    res = results(jobs[0])
    assert res["seed"] == 3 and res["config"]["dataset"]["name"] == "cora"
    assert OmegaConf.load(sweep / "multirun.yaml").hydra.sweeper.params.dataset == "cora,citeseer,pubmed"


def test_eval_reproduces_the_run_and_refuses_another_split(tmp_path, data_dir):
    cfg, metrics = graph_run(tmp_path, data_dir, ["dataset=cora", "latent=gaussian", "seed=1", "trainer.max_epochs=3"])
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()  # train() saved the config eval.py reads
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    same = compose_config("eval", [f"ckpt_path={ckpt}", "seed=1", *FAST[1:]], tmp_path / "eval")
    assert evaluate(same)["test/auc"] == pytest.approx(metrics["test/auc"], abs=1e-6)
    # the eval CLI's own seed draws another split: its test edges were partly training edges
    other = compose_config("eval", [f"ckpt_path={ckpt}", "seed=0", *FAST[1:]], tmp_path / "eval_other")
    with pytest.raises(ValueError, match="another edge split"):
        evaluate(other)


def test_resume_keeps_the_split_and_the_best_epoch_record(tmp_path, data_dir):
    graph_run(tmp_path, data_dir, ["dataset=cora", "latent=gaussian", "seed=2", "trainer.max_epochs=2"], name="part")
    part = results(tmp_path / "part")["metrics"]
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    _, metrics = graph_run(
        tmp_path, data_dir, ["dataset=cora", "latent=gaussian", "seed=2", "trainer.max_epochs=4", f"ckpt_path={last}"],
        name="resumed",
    )
    assert results(tmp_path / "resumed")["global_step"] == 4
    assert metrics["best/val_auc_ap"] >= part["best/val_auc_ap"]
    assert {"best/epoch", "best/val_auc", "best/val_ap"} <= set(metrics)
    # resuming on another seed's split is refused
    with pytest.raises(ValueError, match="another edge split"):
        graph_run(tmp_path, data_dir, ["dataset=cora", "latent=gaussian", "seed=3", "trainer.max_epochs=4",
                                       f"ckpt_path={last}"], name="other")
