"""Constructors check their arguments once, in their own names; the entry layer names the config key a user sets
(hsvae.cli.instantiation.instantiate_node), following interpolations (the model's latent is ``${latent}``)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hsvae.cli.instantiation import instantiate_model, instantiate_node, user_key
from hsvae.utils.errors import ConfigError
from hsvae.cli.stages import instantiate_datamodule
from hsvae.latents import VonMisesFisherLatent
from tests.conftest import compose_config


def test_a_constructor_speaks_in_its_argument_names():
    with pytest.raises(ValueError, match=r"^dim must be an integer >= 1"):
        VonMisesFisherLatent(0)


def test_user_key_follows_interpolations():
    cfg = OmegaConf.create({"latent": {"dim": 2}, "model": {"net": {"latent": "${latent}", "hidden": 3}}})
    assert user_key(cfg, "model.net.latent") == "latent"
    assert user_key(cfg, "model.net") == "model.net"
    assert user_key(cfg, "model.net.latent.dim") == "latent.dim"


@pytest.mark.parametrize("overrides, message", [
    (["latent.dim=0"], "latent.dim must be an integer >= 1 (the intrinsic latent dimension d), got 0"),
    (["latent=spcauchy", "latent.max_rho=2"], "latent.max_rho must lie in (0, 1), got 2"),
    (["model.warmup_epochs=-1"], "model.warmup_epochs must be >= 0"),
])
def test_the_model_error_names_the_config_key(tmp_path, overrides, message):
    cfg = compose_config("train", [*overrides, "data_spec.input_dim=100"], tmp_path / "run")  # (no data read here)
    with pytest.raises(ConfigError) as err:
        instantiate_model(cfg)
    assert str(err.value).startswith(message)


def test_an_evaluator_error_names_the_config_key(tmp_path):
    cfg = compose_config("train", ["evaluation.ll.samples=-1"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^evaluation\.ll\.samples \(importance samples of the test "
                                          r"log-likelihood\) must be an integer >= 1, got -1"):
        instantiate_node(cfg, "evaluation.ll")


def test_the_data_error_names_the_config_key(tmp_path):
    cfg = compose_config("train", ["dataset.batch_size=-3"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^dataset\.batch_size must be a positive integer, got -3"):
        instantiate_datamodule(cfg)


def test_an_argument_the_class_does_not_take_is_named_with_its_origin(tmp_path):
    cfg = compose_config("train", ["+model.bogus=1", "data_spec.input_dim=100"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^model\.bogus is not an argument of hsvae\.training\.VAEModule.*~model\.bogus"):
        instantiate_model(cfg)


def test_any_node_is_named_and_a_message_without_an_argument_name_keeps_the_class(tmp_path):
    graph = {"_target_": "hsvae.data.planetoid.PlanetoidLinkDataModule", "data_dir": str(tmp_path),
             "cache_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"^graphs\.cora\.name must be one of"):
        instantiate_node(OmegaConf.create({"graphs": {"cora": {**graph, "name": "nope"}}}), "graphs.cora")
    with pytest.raises(ConfigError, match=r"^x \(int\): invalid literal"):
        instantiate_node(OmegaConf.create({"x": {"_target_": "builtins.int", "_args_": ["abc"]}}), "x")
