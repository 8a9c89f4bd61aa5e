"""Metric series: group logged values into packed chunks and summarise them.

A write batch holds metric rows ``(run_id, key, value, step, timestamp)``.
:func:`group_metrics` turns them into one :class:`Chunk` per (run, key) with
the values as packed little-endian arrays (int64 steps and timestamps,
float64 values, NaN and +/-inf kept bit for bit) and the chunk's summary:
its latest point (highest step, then latest timestamp, then last logged),
min and max (ignoring NaN) and count.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass

__all__ = ["Chunk", "group_metrics", "pack_floats", "pack_ints", "unpack_floats", "unpack_ints"]

_SWAP = sys.byteorder != "little"


_ONE = {"q": struct.Struct("<q"), "d": struct.Struct("<d")}


def _pack(kind: str, values: list[int] | list[float]) -> bytes:
    if len(values) == 1:  # most chunks of short runs: skip the array round trip
        return _ONE[kind].pack(values[0])
    packed = array(kind, values)
    if _SWAP:  # pragma: no cover - big-endian hosts
        packed.byteswap()
    return packed.tobytes()


def _unpack(kind: str, data: bytes) -> list[int] | list[float]:
    packed = array(kind)
    packed.frombytes(data)
    if _SWAP:  # pragma: no cover - big-endian hosts
        packed.byteswap()
    return packed.tolist()


def pack_ints(values: list[int]) -> bytes:
    """int64 little-endian bytes."""
    return _pack("q", values)


def pack_floats(values: list[float]) -> bytes:
    """float64 little-endian bytes."""
    return _pack("d", values)


def unpack_ints(data: bytes) -> list[int]:
    """Inverse of :func:`pack_ints`."""
    return _unpack("q", data)  # type: ignore[return-value]


def unpack_floats(data: bytes) -> list[float]:
    """Inverse of :func:`pack_floats`."""
    return _unpack("d", data)  # type: ignore[return-value]


@dataclass
class Chunk:
    """The values of one metric of one run from one batch, plus their summary."""

    run_id: str
    key: str
    steps: list[int]
    timestamps: list[int]
    values: list[float]
    latest_value: float
    latest_step: int
    latest_timestamp: int
    min: float | None
    max: float | None

    @property
    def count(self) -> int:
        """Number of values."""
        return len(self.values)


def _summarise(run_id: str, key: str, steps: list[int], stamps: list[int], values: list[float]) -> Chunk:
    if len(values) == 1:  # the common case of log_metrics at the end of a run
        value = values[0]
        only = value if value == value else None
        return Chunk(run_id, key, steps, stamps, values, value, steps[0], stamps[0], only, only)
    top = max(steps)
    if steps[-1] == top and (len(steps) == 1 or steps[-2] < top):
        best = len(steps) - 1  # the common case: steps increase
    else:
        candidates = [i for i, s in enumerate(steps) if s == top]
        best = max(candidates, key=lambda i: (stamps[i], i))
    finite = [v for v in values if v == v]
    return Chunk(
        run_id,
        key,
        steps,
        stamps,
        values,
        values[best],
        steps[best],
        stamps[best],
        min(finite) if finite else None,
        max(finite) if finite else None,
    )


def group_metrics(rows: list[tuple[str, str, float, int, int]]) -> list[Chunk]:
    """One chunk per (run, key), in first-seen order."""
    groups: dict[tuple[str, str], tuple[list[int], list[int], list[float]]] = {}
    get = groups.get
    for run_id, key, value, step, ts in rows:
        group = get((run_id, key))
        if group is None:
            group = groups[(run_id, key)] = ([], [], [])
        group[0].append(step)
        group[1].append(ts)
        group[2].append(float(value))  # an int metric (even past 64 bits) is stored as the float it is
    return [_summarise(run_id, key, *group) for (run_id, key), group in groups.items()]
