"""Metrics of a SMILES VAE: reconstruction accuracy, and validity / uniqueness / novelty of generated strings
(:class:`MoleculeMetrics`, the evaluator).

Validity needs RDKit, an optional dependency: :func:`rdkit_validity` returns a checker, or ``None`` with one
warning line when RDKit is not installed; the other metrics never need it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from hsvae.utils.modules import evaluating
from hsvae.utils.progress import PhaseProgress

from .evaluator import Evaluator, Metrics
from .protocols import Generates, SMILESCorpus

RDKIT_MISSING = (
    "RDKit is not installed: the validity of generated molecules is skipped (pip install rdkit); "
    "reconstruction, uniqueness and novelty are still computed"
)


#: under ``trainer.fast_dev_run`` (a smoke test): generated strings (prior samples and reconstructions, each), at most
FAST_DEV_RUN_DECODES = 8


class RDKitMissingWarning(UserWarning):
    """RDKit could not be imported; validity metrics are skipped."""


def rdkit_validity() -> Callable[[str], bool] | None:
    """``is_valid(smiles) -> bool`` (RDKit parses the string into a molecule), or None with one warning when
    RDKit cannot be imported. RDKit's own per-molecule parse errors are silenced."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        warnings.warn(RDKIT_MISSING, RDKitMissingWarning, stacklevel=2)
        return None
    RDLogger.DisableLog("rdApp.*")

    def is_valid(smiles: str) -> bool:
        return bool(smiles) and Chem.MolFromSmiles(smiles) is not None

    return is_valid


def reconstruction_counts(predicted: torch.Tensor, target: torch.Tensor, pad_id: int) -> tuple[int, int, int]:
    """``(correct tokens, target tokens, correct sequences)`` of decoded sequences against their targets.

    Both are ``(N, L)`` id tensors of the tokens after ``<bos>``: the target's tokens, its ``<eos>``, then
    ``pad_id``; the prediction as decoded (right-padded with ``pad_id`` when shorter). Every target position up
    to and including ``<eos>`` counts; it is correct when the prediction has the same token there. A sequence
    is correct when all of its positions are (so a prediction that goes on past the target's ``<eos>`` is
    wrong there). Tokens are characters, except multi-character atoms (``Cl``, ``Br``, bracket atoms).
    """
    if predicted.dim() != 2 or target.dim() != 2 or predicted.shape[0] != target.shape[0]:
        raise ValueError(f"predicted and target must be (N, L) with the same N, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    width = max(predicted.shape[1], target.shape[1])
    pred = torch.nn.functional.pad(predicted.long(), (0, width - predicted.shape[1]), value=pad_id)
    tgt = torch.nn.functional.pad(target.long(), (0, width - target.shape[1]), value=pad_id)
    mask = tgt != pad_id
    equal = (pred == tgt) & mask
    return int(equal.sum()), int(mask.sum()), int((equal.sum(1) == mask.sum(1)).sum())


def sample_metrics(
    samples: Sequence[str], training: Collection[str], is_valid: Callable[[str], bool] | None = None
) -> dict[str, float]:
    """Quality of strings generated from the prior.

    - ``valid``: share of the samples that are molecules (only with a validity checker);
    - ``unique``: share of distinct strings among the samples;
    - ``novel``: share of the samples that are not training strings;
    - with a checker, also ``unique_valid`` and ``novel_valid``: the same among the valid samples (the MOSES
      convention), 0 when there is none.

    Strings are compared as written (not canonicalised).
    """
    n = len(samples)
    if n == 0:
        raise ValueError("sample_metrics needs at least one generated string")
    out = {
        "unique": len(set(samples)) / n,
        "novel": sum(s not in training for s in samples) / n,
    }
    if is_valid is not None:
        valid = [s for s in samples if is_valid(s)]
        out["valid"] = len(valid) / n
        out["unique_valid"] = len(set(valid)) / len(valid) if valid else 0.0
        out["novel_valid"] = sum(s not in training for s in valid) / len(valid) if valid else 0.0
    return out


class MoleculeMetrics(Evaluator):
    """A SMILES VAE's decoding metrics, at the end of testing (and every ``every_n_epochs`` validation epochs, on
    the validation split): ``<stage>/char_accuracy`` and ``<stage>/string_accuracy`` of greedy decodings from the
    posterior locations of the split's first ``n_reconstructions`` strings (:func:`reconstruction_counts`), and
    for ``n_samples`` strings decoded from prior samples ``<stage>/prior_{unique,novel}`` and, with RDKit,
    ``<stage>/prior_{valid,unique_valid,novel_valid}`` (:func:`sample_metrics`; the strings also go to
    ``<output dir>/smiles_samples_<stage>.txt``); at test, ``test/unknown_strings``: test strings with a token
    outside the training vocabulary. Decoding shows its progress, with an ETA, on a terminal.

    Args:
        n_samples: prior samples decoded for the generation metrics (0: none).
        n_reconstructions: strings of the split decoded for the reconstruction accuracies (0: none).
        every_n_epochs: also on the validation split every this many epochs (0: only at test time; decoding
            costs O(L^2) decoder passes per string).
        batch_size: strings decoded at once.
        greedy: decode prior samples greedily (else sample at ``temperature``); reconstructions are always greedy.
        temperature: softmax temperature of sampled decoding.
    """

    data_needs = (SMILESCorpus,)
    model_needs = (Generates,)
    needs_text = "SMILES strings (dataset=zinc250k) and a sequence VAE (model=smiles_vae)"

    def __init__(self, n_samples: int = 1000, n_reconstructions: int = 1000, every_n_epochs: int = 0,
                 batch_size: int = 500, greedy: bool = True, temperature: float = 1.0):
        for name, value, low in (("n_samples", n_samples, 0), ("n_reconstructions", n_reconstructions, 0),
                                 ("every_n_epochs", every_n_epochs, 0), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not greedy and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.n_samples, self.n_reconstructions, self.every_n_epochs = n_samples, n_reconstructions, every_n_epochs
        self.batch_size, self.greedy, self.temperature = batch_size, greedy, temperature
        self._training_smiles: set[str] = set()

    def setup(self, datamodule: SMILESCorpus) -> None:
        super().setup(datamodule)
        self._training_smiles = set(datamodule.smiles["train"])

    def validation_end(self, trainer: Any, module: Any) -> Metrics:
        every = self.every_n_epochs
        if every > 0 and (trainer.current_epoch + 1) % every == 0:
            return self.decoding_metrics(trainer, module, "val")
        return {}

    def test_end(self, trainer: Any, module: Any) -> Metrics:
        metrics = self.decoding_metrics(trainer, module, "test")
        metrics["test/unknown_strings"] = float(self.data.unknown_strings.get("test", 0))
        return metrics

    @functools.cached_property
    def validity_checker(self) -> Callable[[str], bool] | None:
        """RDKit's validity check, looked up once (one warning line when RDKit is missing)."""
        return rdkit_validity()

    def decoding_metrics(self, trainer: Any, module: Any, split: str) -> Metrics:
        """Greedy reconstructions of the split's first strings and strings generated from the prior, under the
        split's name (``val/...``, ``test/...``)."""
        data = self.data.splits[split]
        size = self.batch_size
        limit = (lambda n: min(n, FAST_DEV_RUN_DECODES)) if trainer.fast_dev_run else (lambda n: n)
        metrics: Metrics = {}
        with evaluating(module.net) as net:
            n = min(limit(self.n_reconstructions), len(data))
            if n > 0:
                correct = tokens = exact = 0
                with PhaseProgress(f"decoding {n} reconstructions", n, trainer, unit="string") as progress:
                    for lo in range(0, n, size):
                        hi = min(lo + size, n)  # the split's first n strings, no more
                        # without the padding columns beyond their longest string (one host read)
                        batch = data.x[lo:hi].to(module.device)[:, : int(data.y[lo:hi].max())].long()
                        predicted = net.generate(net.embed(batch), on_step=progress.stepper(lo, len(batch)))
                        c, t, e = reconstruction_counts(predicted, batch[:, 1:], net.pad_id)
                        correct, tokens, exact = correct + c, tokens + t, exact + e
                metrics[f"{split}/char_accuracy"] = correct / max(tokens, 1)
                metrics[f"{split}/string_accuracy"] = exact / n
            n = limit(self.n_samples)
            if n > 0:
                samples: list[str] = []
                with PhaseProgress(f"decoding {n} prior samples", n, trainer, unit="string") as progress:
                    for lo in range(0, n, size):
                        rows = min(size, n - lo)
                        z = net.latent.prior().sample((rows,))
                        ids = net.generate(z, greedy=self.greedy, temperature=self.temperature,
                                           on_step=progress.stepper(lo, rows))
                        samples += self.data.tokenizer.decode_batch(ids)
                quality = sample_metrics(samples, self._training_smiles, self.validity_checker)
                metrics.update({f"{split}/prior_{k}": v for k, v in quality.items()})
                _write_samples(trainer, samples, split)
        return metrics


def _write_samples(trainer: Any, samples: list[str], stage: str) -> None:
    """The generated strings, one per line, in ``<output_dir>/smiles_samples_<stage>.txt`` (rank zero)."""
    root = trainer.default_root_dir
    if not root or not trainer.is_global_zero or trainer.fast_dev_run:
        return
    path = Path(root) / f"smiles_samples_{stage}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(samples) + "\n")
