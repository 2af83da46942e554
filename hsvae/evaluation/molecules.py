"""Metrics of a SMILES VAE: reconstruction accuracy, and validity / uniqueness / novelty of generated strings.

Validity needs RDKit, an optional dependency: :func:`rdkit_validity` returns a checker, or ``None`` with one
warning line when RDKit is not installed; the other metrics never need it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence

import torch

RDKIT_MISSING = (
    "RDKit is not installed: the validity of generated molecules is skipped (pip install rdkit); "
    "reconstruction, uniqueness and novelty are still computed"
)


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
