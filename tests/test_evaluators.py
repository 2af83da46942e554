"""The test stage's evaluators (conf/evaluation, hsvae/evaluation): chosen by the task or the command line, run
by one driver in train.py and eval.py, each refusing data or a model that lack what it reads in one line."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from hsvae.utils.errors import ConfigError
from hsvae.cli.evaluate import evaluate
from hsvae.cli.evaluators import adopt_legacy_evaluation
from hsvae.cli.train import train
from hsvae.data import SyntheticSphereDataModule
from hsvae.evaluation import EvaluationError, KNNAccuracy, LinkAUCAP, LogLikelihood
from hsvae.latents import GaussianLatent
from hsvae.models import VAE, GaussianLikelihood, MLPDecoder, MLPEncoder
from hsvae.training import VAEModule
from tests.conftest import FAST, compose_config

SMALL = ["dataset.n_train=640", "trainer.max_epochs=1", "evaluation.ll.samples=3", *FAST]
#: every metric an evaluator of the synthetic task logs
SYNTHETIC_EVALUATED = {"test/log_likelihood", "test/knn_accuracy", "test/geodesic_spearman", "test/tear_ratio"}


@pytest.mark.parametrize("overrides, evaluators", [
    ([], {"ll", "knn", "geometry"}),
    (["dataset=mnist"], {"ll", "m1"}),
    (["dataset=cora"], {"links"}),
    (["dataset=zinc250k"], {"molecules"}),
    (["experiment=semisupervised_table"], set()),
    (["dataset=mnist", "evaluation=[knn]"], {"knn"}),
    (["evaluation=[]"], set()),
])
def test_a_task_names_its_evaluators_and_the_command_line_replaces_them(tmp_path, overrides, evaluators):
    cfg = compose_config("train", overrides, tmp_path)
    chosen = {name for name, node in (cfg.get("evaluation") or {}).items() if "_target_" in node}
    assert chosen == evaluators


@pytest.mark.parametrize("chosen, expected", [
    ("[ll,knn]", {"test/log_likelihood", "test/knn_accuracy"}),
    ("[geometry]", {"test/geodesic_spearman", "test/tear_ratio"}),
    ("[]", set()),
])
def test_the_chosen_evaluators_and_only_they_log_their_metrics(tmp_path, chosen, expected):
    cfg = compose_config("train", [*SMALL, f"evaluation={chosen}", "+trainer.fast_dev_run=true"], tmp_path / "run")
    metrics = train(cfg)
    assert {"test/elbo", "test/kl"} <= set(metrics)  # the module's own test step, whatever is chosen
    assert SYNTHETIC_EVALUATED & set(metrics) == expected
    written = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert SYNTHETIC_EVALUATED & set(written) == expected


def test_an_evaluator_the_data_cannot_serve_is_one_line_naming_its_key(tmp_path):
    cfg = compose_config("train", [*SMALL, "evaluation=[ll,links]"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("evaluation.links (LinkAUCAP) needs a graph with held-out test edges")
    assert "SyntheticSphereDataModule with VAEModule does not provide LinkGraph, ScoresPairs" in message
    assert "drop links from evaluation=[...]" in message
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before training


def _vae_module() -> VAEModule:
    net = VAE(MLPEncoder(4, [8]), partial(MLPDecoder, out_features=4, hidden=[8]), GaussianLatent(2),
              GaussianLikelihood())
    return VAEModule(net, optimizer=torch.optim.Adam)


def test_the_protocols_are_what_is_checked():
    module = _vae_module()
    data = SyntheticSphereDataModule(n_train=8, n_val=8, n_test=8, ambient_dim=4)
    KNNAccuracy().check("knn", data, module)  # labelled splits, and a network with latent means
    LogLikelihood().check("ll", data, module)
    graph_like = SimpleNamespace(graph=None)  # a graph, but no labelled splits
    with pytest.raises(EvaluationError, match=r"evaluation.knn \(KNNAccuracy\) .* does not provide LabelledSplits:"):
        KNNAccuracy().check("knn", graph_like, module)
    with pytest.raises(EvaluationError, match="does not provide ScoresPairs:"):
        LinkAUCAP().check("links", graph_like, module)
    with pytest.raises(ValueError, match="samples .* must be an integer >= 1"):
        LogLikelihood(samples=0)


def test_a_run_written_before_the_evaluation_group_keeps_its_evaluators(tmp_path):
    """An old run's config: its model holds the evaluation-only keys, which become the evaluators they switched on."""
    old = OmegaConf.create({
        "model": {"_target_": "hsvae.training.VAEModule", "warmup_epochs": 0, "eval_samples": 100, "knn_k": 5,
                  "knn_train_points": 10000, "m1_labels": [], "m1_k": 5, "m1_seed": None},
        "dataset": {"_target_": "hsvae.data.SyntheticSphereDataModule"}})
    adopt_legacy_evaluation(old)
    assert set(old.model) == {"_target_", "warmup_epochs"}
    assert OmegaConf.to_container(old.evaluation) == {
        "ll": {"_target_": "hsvae.evaluation.LogLikelihood", "samples": 100},
        "knn": {"_target_": "hsvae.evaluation.KNNAccuracy", "k": 5, "train_points": 10000},
        "geometry": {"_target_": "hsvae.evaluation.CircleGeometry"}}
    # a run of the evaluation group that chose none (evaluation: {}) is not mistaken for an old one
    current = compose_config("train", ["evaluation=[]"], tmp_path)
    adopt_legacy_evaluation(current)
    assert not any("_target_" in node for node in current.evaluation.values())


def test_eval_runs_an_old_runs_evaluators_to_the_same_numbers(tmp_path):
    """eval.py on a checkpoint whose run config predates conf/evaluation (rewritten here as the old code wrote it):
    the same evaluators, the same numbers as the run's own test."""
    run = tmp_path / "run"
    trained = train(compose_config("train", SMALL, run))
    config = run / ".hydra" / "config.yaml"
    cfg = OmegaConf.load(config)
    with open_dict(cfg):
        del cfg.evaluation
        cfg.model.eval_samples, cfg.model.knn_k, cfg.model.knn_train_points = 3, 5, 10000
        cfg.model.m1_labels, cfg.model.m1_k, cfg.model.m1_seed = [], 5, None
    config.write_text(OmegaConf.to_yaml(cfg))
    metrics = evaluate(compose_config("eval", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", *FAST[1:]],
                                      tmp_path / "eval"))
    tested = {k: v for k, v in trained.items() if k.startswith("test/")}
    assert set(tested) >= SYNTHETIC_EVALUATED
    assert {k: metrics[k] for k in tested} == tested
