"""MNIST, read with torchvision from ``data_dir/MNIST/raw``, held in memory.

Binarisation follows the S-VAE paper: training images are re-binarised dynamically (each pixel a
Bernoulli draw with the grey level as probability, a fresh draw every time a batch is seen), while
validation and test images are binarised once with a fixed seed so that their metrics are comparable
across epochs and runs. ``binarize="none"`` keeps grey levels in [0, 1] (the spherical-Cauchy
paper's setting: BCE on non-binarised images).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import InMemoryDataModule, Split
from .integrity import verify_known
from hsvae.utils.errors import DatasetNotFoundError

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
BINARIZE_CHOICES = ("dynamic", "static", "none")


def _missing(raw: Path) -> list[str]:
    return [f for f in RAW_FILES if not (raw / f).is_file()]


def check_idx_header(path: Path) -> None:
    """Refuse a raw MNIST file whose idx header or size is wrong, naming it (torchvision would fail with a bare
    ``AssertionError`` that names no file). Images: magic 0x803, (n, 28, 28); labels: magic 0x801, (n,)."""
    images = "images" in path.name
    n = 60000 if path.name.startswith("train") else 10000
    header = 16 if images else 8
    expected = (0x803, n, 28, 28) if images else (0x801, n)
    with path.open("rb") as f:
        raw = f.read(header)
    found = tuple(int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw) - len(raw) % 4, 4))
    size = path.stat().st_size
    want_size = header + n * (784 if images else 1)
    if found != expected or size != want_size:
        raise DatasetNotFoundError(
            f"{path} is not an intact MNIST idx file (header {tuple(hex(v) for v in found[:1]) + found[1:]}, "
            f"{size} bytes; expected magic {hex(expected[0])}, shape {expected[1:]}, {want_size} bytes): replace it "
            "with an intact copy, or delete it and download again (dataset.download=true)."
        )


def load_mnist(data_dir: str | Path, download: bool = True, verify: bool = True,
               cache_dir: str | Path | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return ``{"train": (images uint8 (60000, 28, 28), labels), "test": (...)}``.

    Looks in ``data_dir/MNIST/raw`` (torchvision's layout); downloads there when files are missing,
    ``download`` is true and the network is reachable. Otherwise raises :class:`DatasetNotFoundError`
    naming the directory, the missing files and how to obtain them.
    """
    from torchvision.datasets import MNIST  # imported here: torchvision is slow to import

    data_dir = Path(data_dir).expanduser()
    raw = data_dir / "MNIST" / "raw"
    missing, download_error = _missing(raw), ""
    if missing and download:
        try:
            MNIST(str(data_dir), train=True, download=True)
            MNIST(str(data_dir), train=False, download=True)
        except Exception as err:  # network, permissions, mirrors: all end in the same advice
            download_error = f" (download failed: {type(err).__name__}: {err})"
        missing = _missing(raw)
    if missing:
        raise DatasetNotFoundError(
            f"MNIST not found in {raw}: missing {', '.join(missing)}{download_error}. "
            "Put the four uncompressed idx files from http://yann.lecun.com/exdb/mnist/ (or torchvision's "
            "mirrors) there, or set HSVAE_DATA_DIR / paths.data_dir to a directory containing MNIST/raw/, "
            "or run once with network access (dataset.download=true)."
        )
    for name in RAW_FILES:  # (the shapes torchvision then reads are these headers')
        check_idx_header(raw / name)
    if verify:  # against the published checksums (a stamp in cache_dir keeps later runs from hashing again)
        verify_known(raw, list(RAW_FILES), cache_dir, "Replace it with an intact copy (torchvision's mirrors), or "
                     "delete it and run once with network access (dataset.download=true).")
    try:
        train, test = (MNIST(str(data_dir), train=flag, download=False) for flag in (True, False))
    except Exception as err:
        raise DatasetNotFoundError(
            f"MNIST files in {raw} are unreadable or corrupt ({type(err).__name__}: {err}). "
            "Delete them and download again (dataset.download=true), or replace them with intact copies."
        ) from err
    return {"train": (train.data, train.targets), "test": (test.data, test.targets)}


class MNISTDataModule(InMemoryDataModule):
    """MNIST with a validation split held out of the 60000 training images.

    Args:
        data_dir: directory containing ``MNIST/raw`` (``paths.data_dir``).
        val_size: training images held out for validation (early stopping, model selection).
        binarize: ``"dynamic"`` (S-VAE paper), ``"static"`` (one fixed binarisation) or ``"none"``.
        download: try to download when files are missing.
        batch_size, eval_batch_size, seed: see :class:`InMemoryDataModule`; ``seed`` also fixes the
            validation split and the static binarisation.
        verify: check the raw files against their published checksums (:mod:`hsvae.data.integrity`).
        cache_dir: where a verified file's stamp is kept (``paths.cache_dir``; None: hash every time).
    """

    input_shape = (1, 28, 28)
    num_classes = 10

    def __init__(
        self,
        data_dir: str,
        val_size: int = 10000,
        binarize: str = "dynamic",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = 1000,
        seed: int = 0,
        verify: bool = True,
        cache_dir: str | None = None,
    ):
        super().__init__(batch_size, eval_batch_size, seed)
        if binarize not in BINARIZE_CHOICES:
            raise ValueError(f"binarize must be one of {BINARIZE_CHOICES}, got {binarize!r}")
        if not 0 < val_size < 60000:
            raise ValueError(f"val_size must be in [1, 59999], got {val_size}")
        self.data_dir, self.val_size, self.binarize, self.download = data_dir, val_size, binarize, download
        self.verify, self.cache_dir = verify, cache_dir

    def load_splits(self) -> dict[str, Split]:
        raw = load_mnist(self.data_dir, self.download, self.verify, self.cache_dir)
        g = torch.Generator().manual_seed(self.seed)
        train_x, train_y = raw["train"]
        order = torch.randperm(train_x.shape[0], generator=g)
        val_idx, train_idx = order[: self.val_size], order[self.val_size :]

        def images(x: torch.Tensor, fixed: bool) -> torch.Tensor:
            x = x.unsqueeze(1).float().div_(255.0)
            if fixed and self.binarize != "none":
                x = torch.bernoulli(x, generator=g)
            return x

        static_train = self.binarize == "static"
        return {
            "train": Split(images(train_x[train_idx], static_train), train_y[train_idx]),
            "val": Split(images(train_x[val_idx], True), train_y[val_idx]),
            "test": Split(images(raw["test"][0], True), raw["test"][1]),
        }

    def fixed_inputs(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """Training images, stored as grey levels and binarised afresh for every batch (``binarize="dynamic"``),
        binarised once with ``seed`` (on the CPU), as the test images are; otherwise ``x`` itself."""
        if self.binarize != "dynamic":
            return x
        return torch.bernoulli(x.cpu(), generator=torch.Generator().manual_seed(seed))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.binarize == "dynamic" and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = (torch.bernoulli(x), y)
        return batch
