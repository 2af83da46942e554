"""The start banner's "set by" lines (hsvae/cli/provenance.py): which config file, or the command line, set the
model, latent.dim, the stopping rule and the selection metric of a run, for the real composed configs."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from hsvae.cli import provenance
from hsvae.cli.banner import start_banner


def set_by(text: str) -> dict[str, str]:
    """The banner's "set by" block as ``{"latent.dim=16": "from task=link_prediction, via dataset=cora"}``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  set by"))
    block = [lines[start][len("  set by"):]]
    block += [line for line in lines[start + 1:] if line.startswith(" " * 13)]
    block = [line.strip() for line in block]
    found = {}
    for line in block:
        value, _, source = line.partition(" (")
        found[value] = source.removesuffix(")")
    return found


def test_a_datasets_task_is_named_as_the_source_of_its_protocol(compose_train):
    """dataset=cora chooses the VGAE, d = 16 and no early stopping through its task: the banner says so."""
    found = set_by(start_banner(compose_train(["dataset=cora"])))
    via_task = "from task=link_prediction, via dataset=cora"
    assert found == {
        "model=vgae": via_task,
        "latent.dim=16": via_task,
        "trainer.max_epochs=200": via_task,
        "callbacks.early_stopping=null": via_task,
        "callbacks.model_checkpoint.monitor=val/auc_ap": via_task,
    }


def test_an_experiment_and_the_command_line_win_over_the_task(compose_train):
    found = set_by(start_banner(compose_train(["experiment=link_prediction", "latent=gaussian"])))
    # the experiment's own defaults list and keys come after the dataset's task: they are the ones that count
    assert found["model=vgae"] == "from experiment=link_prediction"
    assert found["latent.dim=16"] == "from experiment=link_prediction"
    assert found["trainer.max_epochs=200"] == "from task=link_prediction, via dataset=cora"
    found = set_by(start_banner(compose_train(["experiment=link_prediction", "latent.dim=4", "model=vgae",
                                               "callbacks.model_checkpoint.monitor=val/auc"], "cl")))
    assert found["latent.dim=4"] == found["model=vgae"] == "command line"
    assert found["callbacks.model_checkpoint.monitor=val/auc"] == "command line"


def test_mnist_with_a_latent_size_on_the_command_line(compose_train):
    text = start_banner(compose_train(["dataset=mnist", "latent.dim=5"]))
    found = set_by(text)
    assert found["latent.dim=5"] == "command line"
    assert found["model=mlp_vae"] == "default of train.yaml"
    assert found["trainer.max_epochs=1000"] == "from task=svae_mnist, via dataset=mnist"
    assert found["callbacks.early_stopping.patience=50"] == "from task=svae_mnist, via dataset=mnist"
    assert found["callbacks.early_stopping.monitor=val/elbo"] == \
        "from callbacks/early_stopping.yaml, via callbacks=default"
    assert found["callbacks.model_checkpoint.monitor=val/elbo"] == \
        "from callbacks/model_checkpoint.yaml, via callbacks=default"
    assert "  selection  best.ckpt by val/elbo (max)\n" in text
    # no latent.dim anywhere but in the latent's own file
    assert set_by(start_banner(compose_train(["dataset=mnist"], "d")))["latent.dim=2"] == "from latent=vmf"


def test_a_variant_and_an_experiment(compose_train):
    found = set_by(start_banner(compose_train(["experiment=synthetic_sphere", "variant=nvae_beta01"])))
    assert found["latent.dim=2"] == "from variant=nvae_beta01"
    assert found["trainer.max_epochs=30"] == "from experiment=synthetic_sphere"
    assert found["callbacks.early_stopping.patience=10"] == "from experiment=synthetic_sphere"
    smiles = set_by(start_banner(compose_train(["experiment=smiles"], "smiles")))
    assert smiles["latent.dim=128"] == "from variant=spcauchy128"
    assert smiles["model=smiles_vae"] == "from task=smiles, via dataset=zinc250k"
    assert smiles["callbacks.model_checkpoint.monitor=val/objective"] == "from task=smiles, via dataset=zinc250k"


def test_switching_early_stopping_off(compose_train):
    found = set_by(start_banner(compose_train(["~callbacks.early_stopping", "trainer.max_epochs=3"])))
    assert found["callbacks.early_stopping=null"] == found["trainer.max_epochs=3"] == "command line"
    found = set_by(start_banner(compose_train(["experiment=latent_comparison"], "lc")))
    assert found["callbacks.early_stopping=null"] == "from experiment=latent_comparison"
    text = start_banner(compose_train(["callbacks=none"], "none"))
    assert "callbacks.early_stopping: no _target_ (callbacks=none, command line)" in text
    assert "  selection  none: the last epoch is tested\n" in text


def test_the_banner_never_fails_on_provenance(compose_train, monkeypatch):
    cfg = compose_train(["dataset=cora"])

    def broken(*args, **kwargs):
        raise RuntimeError("no defaults list")

    monkeypatch.setattr(provenance, "compute", broken)
    found = set_by(start_banner(cfg))
    assert found == {"model=vgae": "?", "latent.dim=16": "?", "trainer.max_epochs=200": "?",
                     "callbacks.early_stopping=null": "?", "callbacks.model_checkpoint.monitor=val/auc_ap": "?"}


def test_a_config_that_is_not_the_running_jobs_has_no_provenance(compose_train, tmp_path):
    """An M1 trained inside an M1+M2 job: its own config (no Hydra node, another output folder) is not the app's,
    whose overrides would name the M2's sources."""
    cfg = compose_train(["dataset=mnist"])  # (sets the running app's HydraConfig, as train.py's would be)
    m1 = compose_train(["dataset=mnist"], "m1")
    with open_dict(m1):
        del m1["hydra"]
        m1.paths.output_dir = str(tmp_path / "run" / "m1")
    assert "set by" not in start_banner(m1)
    # the app's own config without its Hydra node (as @hydra.main passes it): its sources are the app's
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(tmp_path / "m1")  # compose_train("...", "m1") set HydraConfig's output dir
    assert set_by(start_banner(cfg))["trainer.max_epochs=1000"] == "from task=svae_mnist, via dataset=mnist"


def test_an_evaluation_prints_no_provenance(compose_train):
    cfg = compose_train(["dataset=cora"])
    cfg.task_name = "eval"
    assert "set by" not in start_banner(cfg) and "selection" not in start_banner(cfg)


@pytest.mark.parametrize("overrides", [["experiment=semisupervised_table", "combination=sn"],
                                       ["experiment=mnist_table"]])
def test_every_protocol_value_has_a_source(compose_train, overrides):
    found = set_by(start_banner(compose_train(overrides)))
    assert all(source not in ("?", "not set by any config") for source in found.values()), found
    assert any(value.startswith("model=") for value in found)
