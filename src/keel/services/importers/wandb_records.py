"""Reading a W&B run file (``run-<id>.wandb``) into one summary of the run.

``wandb`` writes each run as a log of protocol-buffer records
(``wandb.proto.wandb_internal_pb2.Record``) in the LevelDB log format: a
7-byte header (``:W&B``, magic ``0xBEE1``, version), then 32 KiB blocks of
chunks, each ``crc32c (4) | length (2, little-endian) | type (1)`` followed
by ``length`` bytes; type 1 is a whole record, 2/3/4 its first, middle and
last pieces. wandb 0.31 reads these files in its Go core only, so the chunks
are put together here and each record is decoded with wandb's own protobuf
classes (the ``import-wandb`` extra).

A run file that ends in the middle of a record (a crashed run) yields the
records before it.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput

__all__ = ["WandbRun", "read_run", "wandb_proto"]

_MAGIC = b":W&B\xe1\xbe"
_HEADER = 7
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_proto() -> Any:
    """wandb's record definitions, or a clear error naming the extra to install."""
    try:
        with warnings.catch_warnings():  # protobuf runtime notes at import time
            warnings.simplefilter("ignore")
            from wandb.proto import wandb_internal_pb2
    except ImportError:
        raise InvalidInput(
            "importing from W&B needs the wandb package", "install it: pip install 'keel[import-wandb]'"
        ) from None
    return wandb_internal_pb2


def _chunks(data: bytes, where: str) -> Iterator[bytes]:
    """The records of a LevelDB-format log (after the W&B header)."""
    if not data.startswith(_MAGIC) or len(data) < _HEADER:
        raise InvalidInput(f"{where} is not a W&B run file (no ':W&B' header)", "give a folder wandb wrote")
    pos = _HEADER
    pending: bytes | None = None
    end = len(data)
    while pos + _CHUNK_HEADER <= end:
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK_HEADER:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:  # zero padding up to the next block
            pos += left
            continue
        body = data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        if len(body) < length:
            return  # cut off mid-record: what came before is all there is
        pos += _CHUNK_HEADER + length
        if kind == _FULL:
            yield body
        elif kind == _FIRST:
            pending = body
        elif kind == _MIDDLE and pending is not None:
            pending += body
        elif kind == _LAST and pending is not None:
            yield pending + body
            pending = None
        else:
            raise InvalidInput(f"{where} is damaged (chunk type {kind} at byte {pos})", "restore it from a backup")


def _items_to_dict(items: Any, into: dict[str, Any] | None = None) -> dict[str, Any]:
    """W&B's ``key``/``nested_key`` + ``value_json`` items as a nested dict."""
    out: dict[str, Any] = {} if into is None else into
    for item in items:
        path = list(item.nested_key) or [item.key]
        try:
            value = json.loads(item.value_json)
        except ValueError:
            value = item.value_json
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return out


@dataclass
class WandbRun:
    """Everything the importer needs from one run file."""

    run_id: str = ""
    project: str = ""
    entity: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""
    job_type: str = ""
    notes: str = ""
    start_ms: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one nested dict per logged step
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None  # None: the run never finished (crashed or still running)
    runtime_s: float = 0.0


def read_run(path: Path) -> WandbRun:
    """Decode a ``run-<id>.wandb`` file."""
    pb = wandb_proto()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", "check the path") from None
    run = WandbRun()
    for raw in _chunks(data, str(path)):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception as exc:  # protobuf's DecodeError
            raise InvalidInput(
                f"{path} holds a record wandb cannot decode ({exc})", "restore it from a backup"
            ) from None
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project, r.entity
            run.name, run.tags = r.display_name, list(r.tags)
            run.group, run.job_type, run.notes = r.run_group, r.job_type, r.notes
            if r.HasField("start_time"):
                run.start_ms = r.start_time.seconds * 1000 + r.start_time.nanos // 1_000_000
            _items_to_dict(r.config.update, run.config)
        elif kind == "config":
            _items_to_dict(record.config.update, run.config)
            for item in record.config.remove:
                run.config.pop(item.key, None)
        elif kind == "history":
            row = _items_to_dict(record.history.item)
            if "_step" not in row and record.history.HasField("step"):
                row["_step"] = record.history.step.num
            run.history.append(row)
        elif kind == "summary":
            _items_to_dict(record.summary.update, run.summary)
            for item in record.summary.remove:
                run.summary.pop(item.key, None)
        elif kind == "exit":
            run.exit_code = int(record.exit.exit_code)
            run.runtime_s = float(record.exit.runtime)
    if not run.run_id:
        raise InvalidInput(f"{path} has no run record", "give a run file wandb wrote (run-<id>.wandb)")
    return run
