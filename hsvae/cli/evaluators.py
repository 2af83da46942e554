"""The ``evaluation`` config group as the test stage's driver, for train.py, a stack's members and eval.py; and the
evaluators of a run written before the group existed."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from hsvae.cli.instantiation import instantiate_node
from hsvae.utils.errors import ConfigError, EvaluationError
from hsvae.training.evaluators import EvaluatorsCallback

log = logging.getLogger(__name__)

#: the evaluation-only arguments the model configs had before ``conf/evaluation`` (the model key -> the evaluator
#: and its argument), which a run's saved config may still hold
LEGACY_KEYS = {
    "eval_samples": ("ll", "samples"), "knn_k": ("knn", "k"), "knn_train_points": ("knn", "train_points"),
    "m1_labels": ("m1", "labels"), "m1_k": ("m1", "k"), "m1_seed": ("m1", "seed"),
    "n_samples": ("molecules", "n_samples"), "n_reconstructions": ("molecules", "n_reconstructions"),
    "decode_every_n_epochs": ("molecules", "every_n_epochs"), "decode_batch_size": ("molecules", "batch_size"),
    "greedy": ("molecules", "greedy"), "temperature": ("molecules", "temperature"),
}
#: whether a legacy config's settings of an evaluator switched it on
SWITCHED_ON = {"ll": lambda s: s.get("samples", 0) > 0, "knn": lambda s: s.get("k", 0) > 0,
               "m1": lambda s: bool(s.get("labels")), "molecules": lambda s: True}
#: evaluator key -> its class (what a legacy config's evaluators are built as)
TARGETS = {"ll": "hsvae.evaluation.LogLikelihood", "knn": "hsvae.evaluation.KNNAccuracy",
           "m1": "hsvae.evaluation.M1Accuracy", "geometry": "hsvae.evaluation.CircleGeometry",
           "links": "hsvae.evaluation.LinkAUCAP", "molecules": "hsvae.evaluation.MoleculeMetrics"}


def instantiate_evaluators(cfg: DictConfig, datamodule: pl.LightningDataModule,
                           module: pl.LightningModule) -> EvaluatorsCallback:
    """The driver of the evaluators ``cfg.evaluation`` holds (key -> evaluator config; a key without ``_target_``,
    the leftover settings of an evaluator the command line left out, is skipped), checked against the data and
    model it will run on."""
    evaluators = {}
    for name, node in (cfg.get("evaluation") or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            evaluators[name] = instantiate_node(cfg, f"evaluation.{name}")
        else:
            log.debug("evaluation.%s has no _target_ (an evaluator not chosen, with leftover settings); skipped", name)
    try:
        return EvaluatorsCallback(evaluators, datamodule, module)
    except EvaluationError as err:
        raise ConfigError(str(err)) from err


def adopt_legacy_evaluation(cfg: DictConfig) -> None:
    """A run's config written before ``conf/evaluation`` (its model holds ``eval_samples``, ``m1_labels``, ...):
    those keys leave the model (whose module no longer takes them) and become the evaluators they switched on, as
    that code computed them (the log-likelihood for ``eval_samples > 0``, the k-NN for ``knn_k > 0``, M1 for
    ``m1_labels``, the molecules' decoding for a SMILES model, the link AUC/AP for the VGAE, the circle geometry for
    the synthetic sphere). A config with an ``evaluation`` node is left as it is."""
    if "evaluation" in cfg or not isinstance(cfg.get("model"), DictConfig):
        return
    target = str(cfg.model.get("_target_", ""))
    settings: dict[str, dict] = {}
    with open_dict(cfg):
        for key, (name, argument) in LEGACY_KEYS.items():
            if key in cfg.model:
                settings.setdefault(name, {})[argument] = OmegaConf.to_container(cfg.model, resolve=True)[key]
                del cfg.model[key]
        chosen = {name: arguments for name, arguments in settings.items() if SWITCHED_ON[name](arguments)}
        if target.endswith("LinkPredictionModule"):
            chosen["links"] = {}
        if str(OmegaConf.select(cfg, "dataset._target_", default="")).endswith("SyntheticSphereDataModule"):
            chosen["geometry"] = {}
        cfg.evaluation = {name: {"_target_": TARGETS[name], **arguments} for name, arguments in chosen.items()}
    log.info("a run written before conf/evaluation: its evaluation-only model keys become evaluation=[%s]",
             ",".join(chosen))
