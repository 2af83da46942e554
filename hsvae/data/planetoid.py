"""The Planetoid citation graphs (Cora, CiteSeer, PubMed), read with torch-geometric's ``Planetoid``.

Raw files are looked for in ``data_dir/Planetoid/<Name>/raw/`` (torch-geometric's layout, the folder the
Planetoid authors' ``ind.<name>.*`` files go in) and downloaded there when missing, if ``download`` is true and
the network is reachable. That folder may be a read-only shared copy, so the raw files are copied to
``cache_dir/Planetoid/<Name>/raw/`` and torch-geometric writes its ``processed/`` files next to the copy.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch

from hsvae.utils.errors import DatasetNotFoundError
from hsvae.utils.io import atomic_file
from .integrity import verify_known
from .links import LinkPredictionDataModule

#: lower-case name (the config's ``dataset.name``) -> torch-geometric's name and folder
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
#: where torch-geometric downloads the files from (the Planetoid authors' repository)
RAW_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"


def planetoid_name(name: str) -> str:
    """torch-geometric's spelling of ``name`` (case-insensitive), or a ValueError listing the choices."""
    key = str(name).lower()
    if key not in PLANETOID_NAMES:
        raise ValueError(f"name must be one of {sorted(PLANETOID_NAMES)} (a Planetoid graph), got {name!r}")
    return PLANETOID_NAMES[key]


def raw_file_names(name: str) -> list[str]:
    """The eight ``ind.<name>.*`` files of a Planetoid graph."""
    key = planetoid_name(name).lower()
    return [f"ind.{key}.{suffix}" for suffix in RAW_SUFFIXES]


def _missing(raw_dir: Path, files: list[str]) -> list[str]:
    return [f for f in files if not (raw_dir / f).is_file()]


def _download(raw_dir: Path, files: list[str]) -> str:
    """Try to download ``files`` into ``raw_dir``; return "" or a note on why it failed."""
    from torch_geometric.data import download_url

    created = [p for p in (raw_dir, *raw_dir.parents) if not p.exists()]
    try:
        for f in files:
            download_url(f"{RAW_URL}/{f}", str(raw_dir), log=False)
    except Exception as err:  # network, permissions, a moved URL: the same advice follows
        for folder in created:  # leave no empty folders behind (download_url creates them first)
            try:
                folder.rmdir()
            except OSError:
                break
        return f" (download failed: {type(err).__name__}: {err})"
    return ""


def _unreadable(raw_dir: Path, files: list[str]) -> list[str]:
    """The files torch-geometric's reader cannot parse (truncated or corrupt), each with the reason."""
    bad = []
    for f in files:
        path = raw_dir / f
        try:
            if f.endswith("test.index"):
                [int(line) for line in path.read_text().split()]
            else:
                with open(path, "rb") as handle, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pickle.load(handle, encoding="latin1")
        except Exception as err:
            bad.append(f"{f} ({type(err).__name__}: {err})")
    return bad


def _sync_copy(src_dir: Path, dst_dir: Path, files: list[str]) -> bool:
    """Copy ``files`` that are missing or differ (size, mtime) in ``dst_dir``, with the source's times; return whether
    any was copied. Each file is written to a temporary name and renamed (:func:`~hsvae.utils.io.atomic_file`), so a
    concurrent run never reads half a file.
    """
    copied = False
    for f in files:
        src, dst = src_dir / f, dst_dir / f
        s = src.stat()
        if dst.is_file():
            d = dst.stat()
            if d.st_size == s.st_size and d.st_mtime_ns == s.st_mtime_ns:
                continue
        with open(src, "rb") as source, atomic_file(dst, "wb") as out:
            shutil.copyfileobj(source, out)
            out.flush()  # (before the times are set: a later write would change them)
            os.utime(out.fileno(), ns=(s.st_atime_ns, s.st_mtime_ns))
        copied = True
    return copied


def load_planetoid(
    name: str, data_dir: str | Path, cache_dir: str | Path, download: bool = True, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x (N, F) float32 raw features, edge_index (2, E') long, y (N,) long)`` of a Planetoid graph.

    Raises :class:`DatasetNotFoundError` naming the directory and the missing or unreadable files.
    """
    from torch_geometric.datasets import Planetoid  # imported here: torch-geometric is slow to import

    folder = planetoid_name(name)
    files = raw_file_names(name)
    raw_dir = Path(data_dir).expanduser() / "Planetoid" / folder / "raw"
    missing = _missing(raw_dir, files)
    download_note = ""
    if missing and download:
        download_note = _download(raw_dir, missing)
        missing = _missing(raw_dir, files)
    if missing:
        raise DatasetNotFoundError(
            f"{folder} not found: missing {', '.join(missing)} in {raw_dir}{download_note}. Put the Planetoid "
            f"files ind.{folder.lower()}.* from {RAW_URL} there, set HSVAE_DATA_DIR / paths.data_dir to a "
            "directory containing Planetoid/<Name>/raw/, or run once with network access (dataset.download=true)."
        )
    if verify:  # the published checksums (a stamp in the cache keeps later runs from hashing again)
        verify_known(raw_dir, files, cache_dir, f"Replace it with an intact copy (from {RAW_URL}).")
    root = Path(cache_dir).expanduser() / "Planetoid"
    cache_raw = root / folder / "raw"
    if raw_dir.resolve() != cache_raw.resolve() and _sync_copy(raw_dir, cache_raw, files):
        # New raw files: whatever torch-geometric processed before is stale.
        shutil.rmtree(root / folder / "processed", ignore_errors=True)
    try:
        data = Planetoid(str(root), folder)[0]
    except Exception as err:
        bad = _unreadable(cache_raw, files)
        if bad:
            raise DatasetNotFoundError(
                f"{folder} raw files in {raw_dir} are truncated or corrupt: {'; '.join(bad)}. "
                f"Replace them with intact copies (from {RAW_URL})."
            ) from err
        raise DatasetNotFoundError(
            f"torch-geometric could not read {folder} from {cache_raw} ({type(err).__name__}: {err}); "
            f"delete {root / folder} to rebuild it from {raw_dir}."
        ) from err
    check_test_index(raw_dir, folder, data.x.shape[0])
    return data.x, data.edge_index, data.y


def check_test_index(raw_dir: Path, folder: str, nodes: int) -> None:
    """What a checksum cannot check on a graph of one's own: the test nodes' indices (``ind.<name>.test.index``)
    are distinct, lie among the graph's nodes and are as many as the test feature rows (``ind.<name>.tx``)."""
    from torch_geometric.io.planetoid import read_file  # imported here: torch-geometric is slow to import

    path = raw_dir / f"ind.{folder.lower()}.test.index"
    index = read_file(str(raw_dir), folder.lower(), "test.index")
    rows = read_file(str(raw_dir), folder.lower(), "tx").shape[0]
    problem = None
    if index.numel() != index.unique().numel():
        problem = f"{index.numel() - index.unique().numel()} repeated indices"
    elif index.numel() and (int(index.min()) < 0 or int(index.max()) >= nodes):
        problem = f"indices from {int(index.min())} to {int(index.max())}, outside the graph's {nodes} nodes"
    elif index.numel() != rows:
        problem = f"{index.numel()} indices for {rows} test feature rows (ind.{folder.lower()}.tx)"
    if problem:
        raise DatasetNotFoundError(f"{path} does not fit the graph: {problem}. Replace it with an intact copy "
                                   f"(from {RAW_URL}).")


class PlanetoidLinkDataModule(LinkPredictionDataModule):
    """Link prediction on Cora, CiteSeer or PubMed (the split: see :mod:`hsvae.data.links`).

    Args:
        name: ``cora``, ``citeseer`` or ``pubmed`` (case-insensitive).
        data_dir: directory containing ``Planetoid/<Name>/raw/`` (``paths.data_dir``).
        cache_dir: where the raw files are copied and torch-geometric's ``processed/`` is written
            (``paths.cache_dir``).
        download: try to download missing raw files into ``data_dir``.
        verify: check the raw files against their published checksums (:mod:`hsvae.data.integrity`).
        val_fraction, test_fraction, seed, normalize_features: see :class:`LinkPredictionDataModule`.
    """

    def __init__(
        self,
        name: str,
        data_dir: str,
        cache_dir: str,
        download: bool = True,
        val_fraction: float = 0.05,
        test_fraction: float = 0.10,
        seed: int = 0,
        normalize_features: bool = False,
        verify: bool = True,
    ):
        super().__init__(val_fraction, test_fraction, seed, normalize_features)
        self.name = planetoid_name(name)
        self.data_dir, self.cache_dir, self.download, self.verify = data_dir, cache_dir, download, verify

    def load_graph(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return load_planetoid(self.name, self.data_dir, self.cache_dir, self.download, self.verify)
