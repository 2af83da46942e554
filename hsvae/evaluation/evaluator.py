"""The interface of a metric family computed at the test stage: :class:`Evaluator`.

An evaluator is configured by one yaml of ``conf/evaluation/`` and run by one driver,
:class:`hsvae.training.evaluators.EvaluatorsCallback`, on whatever module and data the run tests. It declares what
it reads through the protocols of :mod:`hsvae.evaluation.protocols`, which the driver checks once, before the run
uses the data; its hooks return metrics (full names: ``test/knn_accuracy``), which the driver logs.
"""

from __future__ import annotations

from typing import Any

import torch

from hsvae.utils.errors import EvaluationError
from hsvae.utils.modules import evaluating

__all__ = ["EvaluationError", "Evaluator"]


#: a hook's metrics: name -> value (a scalar tensor or a float)
Metrics = dict[str, "torch.Tensor | float"]


class Evaluator:
    """One metric family. A subclass sets :attr:`data_needs` / :attr:`model_needs` and overrides the hooks it uses.

    Hooks (``trainer`` and ``module`` are Lightning's; the module's network is ``module.net``):

    - :meth:`setup`: the data module (:attr:`data`), once it holds its data, before fit or test (checks of values
      against the data, e.g. labelled-set sizes);
    - :meth:`test_batch`: per test batch, after the module's ``test_step`` (for draws that must follow the step's own,
      batch by batch): ``(metrics, batch size)`` averaged over the epoch by the batch sizes, or None;
    - :meth:`test_end`: once, at the end of the test epoch: metrics of the whole split;
    - :meth:`validation_end`: at the end of a validation epoch (most evaluators: nothing).
    """

    #: the data protocols (:mod:`hsvae.evaluation.protocols`) the data module must implement
    data_needs: tuple[type, ...] = ()
    #: the protocols the network (``module.net``) must implement
    model_needs: tuple[type, ...] = ()
    #: the protocols the Lightning module itself must implement
    module_needs: tuple[type, ...] = ()
    #: what the data must be, for the message when it is not (e.g. "labelled splits (dataset=synthetic|mnist)")
    needs_text: str = ""
    #: the data module, from :meth:`setup` on
    data: Any = None

    def check(self, name: str, datamodule: Any, module: Any) -> None:
        """EvaluationError, in one line naming the config key and the fix, when the data or the model lacks what
        this evaluator reads. (A network built from the data at setup, the SMILES VAE's, is not there yet: its
        module accepts only the data that builds it, which the data protocols check.)"""
        missing = [p.__name__ for p in self.data_needs if not isinstance(datamodule, p)]
        if module.net is not None:
            missing += [p.__name__ for p in self.model_needs if not isinstance(module.net, p)]
        missing += [p.__name__ for p in self.module_needs if not isinstance(module, p)]
        if missing:
            raise EvaluationError(
                f"evaluation.{name} ({type(self).__name__}) needs {self.needs_text or ', '.join(missing)}; "
                f"{type(datamodule).__name__} with {type(module).__name__} does not provide {', '.join(missing)}: "
                f"drop {name} from evaluation=[...] (the task's defaults are in conf/task/)"
            )

    def setup(self, datamodule: Any) -> None:
        """Keeps the data module (:attr:`data`), once it is loaded (before fit or test); a subclass checks values
        against it here."""
        self.data = datamodule

    def test_start(self, trainer: Any, module: Any) -> None:
        """Before the first test batch."""

    def test_batch(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> tuple[Metrics, int] | None:
        return None

    def test_end(self, trainer: Any, module: Any) -> Metrics:
        return {}

    def validation_end(self, trainer: Any, module: Any) -> Metrics:
        return {}

    def teardown(self) -> None:
        """After the test epoch, or when it is interrupted (close progress bars)."""


def latent_means(module: Any, x: torch.Tensor) -> torch.Tensor:
    """The posterior locations of inputs ``x`` (on the CPU or the device) on the module's device, the network in
    eval mode, 1000 points at a time."""
    with evaluating(module.net) as net:
        return torch.cat([net.embed(b.to(module.device)) for b in x.split(1000)])


def latent_distance(net: Any) -> str:
    """The k-NN's distance for the network's latent: the cosine on the sphere (the geodesic order), else
    Euclidean."""
    return "cosine" if net.latent.spheres else "euclidean"
