"""The public datasets' raw files, checked against their known checksums before first use.

A file that parses can still be wrong: Planetoid's ``ind.cora.test.index`` cut to half its bytes loads, and the
model trains with a third of Cora's feature rows in the wrong place. So every raw file of a dataset this project
knows (MNIST's four, Planetoid's eight per graph, ZINC250k's SMILES list) is compared with its published MD5 (the
MNIST files' are torchvision's; the Planetoid files' are those of the planetoid repository's blobs, from which
every public copy comes) before a run reads it. A file that matches gets a stamp in the cache (its path, size and
modification time), so later runs do not hash it again. A mismatch names the file, both checksums and the fix;
``dataset.verify=false`` opts out, for a copy of one's own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hsvae.utils.errors import DatasetNotFoundError
from hsvae.utils.io import write_text_atomic

#: file name -> MD5 of the file as published
KNOWN_MD5 = {
    # MNIST (torchvision's layout: MNIST/raw/), uncompressed and compressed
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    # Planetoid (Planetoid/<Name>/raw/)
    "ind.cora.x": "190831eee19d8f330d89d94b40a65c5a",
    "ind.cora.y": "78344284e3ff7fd24eb9c307d51351eb",
    "ind.cora.tx": "b29c36916768e1d2f55391c1aa9317ac",
    "ind.cora.ty": "48bf43f54fa5b86089a4bd0299795f10",
    "ind.cora.allx": "c9083193a57057dd1238321e140194d7",
    "ind.cora.ally": "125d70817fe1fdbfdcad991995e81579",
    "ind.cora.graph": "b37c419cec179f45834467630c278e4c",
    "ind.cora.test.index": "9b822cae1d01f41e8bf8782e20367c0e",
    "ind.citeseer.x": "baeb0100b5a8af8d41f928113ce0a4e5",
    "ind.citeseer.y": "8b99f50aa950fbbf9a7a2b71ff9cac97",
    "ind.citeseer.tx": "c25ab826a7e95c0922ab625de705f7df",
    "ind.citeseer.ty": "356894a73b7a7eff43c3580f2fcf92a4",
    "ind.citeseer.allx": "28486b4b9c4ee076b4eee2febd89ba86",
    "ind.citeseer.ally": "f0df7e5f859245e32987bfd224d01657",
    "ind.citeseer.graph": "5f88483d5f5cc2b26b987bbbfb695005",
    "ind.citeseer.test.index": "70af39d4dff8aaa5c63f8dc526b16534",
    "ind.pubmed.x": "2e93a89281c7597939cfb24976696f54",
    "ind.pubmed.y": "520bb2899bb8fb705181b8e34a973573",
    "ind.pubmed.tx": "30d5abd15cf10e46ebd9514b256e0347",
    "ind.pubmed.ty": "3082e367753e3a81c457f644316ca17d",
    "ind.pubmed.ally": "ab5def164b4c5b33e215b6397a84ee4b",
    "ind.pubmed.graph": "601ee2ffa59197989ff7267383a4ea46",
    "ind.pubmed.test.index": "57cdfacfa20179b9b92e077fba394d1c",
    # ind.pubmed.allx: no verified copy was at hand to take its checksum from; it is checked for structure only
}


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(cache_dir: Path, path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return cache_dir / "verified" / f"{path.name}.{key}.json"


def verify_file(path: Path, expected: str, cache_dir: str | Path | None, fix: str) -> None:
    """Raise :class:`DatasetNotFoundError` unless ``path``'s MD5 is ``expected`` (a matching stamp in
    ``cache_dir`` skips the hashing)."""
    path = Path(path)
    stamp = _stamp_path(Path(cache_dir).expanduser(), path) if cache_dir is not None else None
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "md5": expected}
    if stamp is not None:
        try:
            if json.loads(stamp.read_text()) == identity:
                return
        except (OSError, ValueError):
            pass
    found = md5_of(path)
    if found != expected:
        raise DatasetNotFoundError(
            f"{path} is not the published file: its MD5 is {found}, expected {expected} (truncated or corrupt, or "
            f"another version). {fix} A copy of your own: dataset.verify=false.")
    if stamp is not None:
        try:
            write_text_atomic(stamp, json.dumps(identity))
        except OSError:
            pass  # a read-only cache: the file is hashed again next time


def verify_known(raw_dir: Path, files: list[str], cache_dir: str | Path | None, fix: str) -> None:
    """Verify each of ``files`` in ``raw_dir`` whose published checksum this module knows."""
    for name in files:
        if name in KNOWN_MD5:
            verify_file(Path(raw_dir) / name, KNOWN_MD5[name], cache_dir, fix)
