"""Read what an offline W&B run recorded, without uploading it.

An offline run (``<save_dir>/wandb/offline-run-*/run-*.wandb``) is a LevelDB-style log: a 7-byte header
(``:W&B``, magic, version), then 32 KiB blocks of records, each with a 7-byte header (CRC32, length,
type: 1 full, 2 first, 3 middle, 4 last) holding a serialised ``wandb_internal_pb2.Record``.
The tests read offline runs with it (W&B has no reader for them that does not upload).
"""

from __future__ import annotations

import struct
from pathlib import Path

_BLOCK = 32768
_HEADER = 7


def _records(path: Path):
    buf = path.read_bytes()
    if buf[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (no ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(buf):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos : pos + _HEADER])
        pos += _HEADER
        if kind == 0 and length == 0:
            break
        pending += buf[pos : pos + length]
        pos += length
        if kind in (1, 4):
            yield pending
            pending = b""


def read_offline_run(run_dir: str | Path) -> dict:
    """Summarise an offline run directory: ``{"config": {key: json}, "history_keys": set, "history": [dict],
    "run": {"group", "tags", "name", "job_type"}}``.

    History values are the JSON strings W&B stores (``json.loads`` them for numbers).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    config, history, run = {}, [], {}
    for data in _records(files[0]):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"group": record.run.run_group, "tags": list(record.run.tags), "name": record.run.display_name,
                   "job_type": record.run.job_type}
        elif kind == "config":
            config.update({u.key: u.value_json for u in record.config.update})
        elif kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item})
    keys = set().union(*history) if history else set()
    return {"config": config, "history_keys": keys, "history": history, "run": run}
