"""The on-disk spool: logged batches the store or server could not take yet.

Layout (see ``docs/delivery.md``)::

    <spool root>/                       KEEL_SPOOL_DIR, else <workspace>/.keel/spool,
      <destination>/                    else ~/.cache/keel/spool (no workspace)
        DESTINATION                     the store's URL, credentials masked (for `keel sync --status`)
        runs/ conversations/ llm/ exposures/
          <time>-<pid>-<token>.seg      append-only segment files
          <time>-<pid>-<token>.seg.ack  how far the segment is delivered (8 bytes)

A segment starts with :data:`FILE_MAGIC` and holds records, each a
:data:`RECORD` header (``b"KR"``, payload length, CRC-32 of the payload, rows,
creation time in ms) and its payload (one batch, see :func:`encode_batch`). A
record is appended with one ``write``; a write that fails part-way (a full
disk) is cut back off, so a segment never holds half a record of a live
process. Records are fsynced in batches (:meth:`StreamSpool.sync`); a process
that dies loses nothing it wrote (the page cache survives it), an operating
system crash at most what was written since the last sync.

**Ownership.** A process holds an exclusive ``flock`` on every segment it
writes, for as long as it lives. A segment nobody holds is an *orphan* (its
process exited or was killed): :meth:`StreamSpool.claim_orphans` takes the lock
(non-blocking, so two processes never deliver the same segment at once) and
delivers it from its ``.ack`` offset. The ack is written after each delivered
record without a sync: after a crash a few records may be sent again, and the
store skips them (every batch carries its id: :mod:`keel.meta.delivered`). A
segment is created under a hidden name, locked, then renamed into place, so
nobody can claim it between its creation and its lock.

A damaged record (a torn tail, a flipped bit: the CRC tells) ends the reading
of its segment: what follows is counted as damaged and reported, never
delivered half-read.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import struct
import threading
import time
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keel.core.batch import WriteBatch
from keel.core.urls import mask_url
from keel.errors import InvalidInput

__all__ = [
    "FILE_MAGIC",
    "RECORD",
    "STREAMS",
    "ClaimedSegment",
    "Record",
    "SpoolStatus",
    "StreamSpool",
    "decode_batch",
    "destination_key",
    "encode_batch",
    "scan",
    "spool_root",
]

FILE_MAGIC = b"KEELSPOOL1\n"
RECORD = struct.Struct("<2sIIIq")  # b"KR", payload length, crc32(payload), rows, created (ms)
RECORD_MAGIC = b"KR"
SEGMENT_BYTES = 16 << 20  # a segment is closed for appends at this size
MAX_RECORD_BYTES = 1 << 30  # a header claiming more is damage, not a record
STREAMS = ("runs", "conversations", "llm", "exposures", "traces")
_NAME = re.compile(r"\d{20}-\d+-[0-9a-f]{8}\.seg")


# -- where the spool lives ---------------------------------------------------------------------
def spool_root(workspace: Path | None) -> Path:
    """``KEEL_SPOOL_DIR``, else ``<workspace>/.keel/spool``, else the per-user cache
    (``$XDG_CACHE_HOME/keel/spool``, by default ``~/.cache/keel/spool``)."""
    configured = os.environ.get("KEEL_SPOOL_DIR")
    if configured:
        return Path(configured).expanduser()
    if workspace is not None:
        return Path(workspace) / ".keel" / "spool"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "keel" / "spool"


def destination_key(identity: str) -> str:
    """A folder name for a store: readable, and unique per masked URL (never a credential)."""
    from keel.core.hashing import hash_bytes

    masked = mask_url(identity)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", masked.split("://", 1)[-1]).strip("-")[-40:] or "store"
    return f"{slug}-{hash_bytes(masked.encode())[:10]}"


# -- records -----------------------------------------------------------------------------------
@dataclasses.dataclass
class Record:
    """One spooled batch: where it is, how many rows it holds, when it was logged."""

    offset: int  # of its header in the segment
    length: int  # of its payload
    rows: int
    created: int  # ms since the epoch
    seq: int = 0  # the writer's sequence number (own records only)
    batch_id: str = ""

    @property
    def end(self) -> int:
        return self.offset + RECORD.size + self.length


def _header(payload: bytes, rows: int, created: int) -> bytes:
    return RECORD.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload), rows, created)


def read_record(fd: int, offset: int, size: int) -> tuple[Record, bytes] | None:
    """The record at ``offset`` of a segment of ``size`` bytes and its payload; None at the end
    or at damage (a torn or corrupt record)."""
    if offset + RECORD.size > size:
        return None
    head = os.pread(fd, RECORD.size, offset)
    if len(head) < RECORD.size:
        return None
    magic, length, crc, rows, created = RECORD.unpack(head)
    if magic != RECORD_MAGIC or length > MAX_RECORD_BYTES or offset + RECORD.size + length > size:
        return None
    payload = os.pread(fd, length, offset + RECORD.size)
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return Record(offset, length, rows, created), payload


# -- the payload: one batch --------------------------------------------------------------------
def encode_batch(batch_id: str, batch: Any, created: int) -> bytes:
    """A batch as spool payload: the wire codec's JSON (``keel.sdk.remote.wire_codec``), with a
    :class:`WriteBatch`'s metrics as packed columns (a few bytes and ~0.1 us per point)."""
    from keel.sdk.remote import wire_codec

    doc: dict[str, Any] = {"v": 1, "id": batch_id, "at": created}
    if isinstance(batch, WriteBatch) and batch.metrics:
        doc["m"] = _metric_columns(batch.metrics)
        batch = dataclasses.replace(batch, metrics=[])
    doc["b"] = wire_codec().encode(batch)
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode_batch(payload: bytes) -> tuple[str, Any]:
    """``(batch id, batch)`` from :func:`encode_batch`'s bytes; InvalidInput if they are not one."""
    from keel.sdk.remote import wire_codec

    try:
        doc = json.loads(payload)
        batch = wire_codec().decode(doc["b"])
        if "m" in doc:
            batch.metrics = _metric_rows(doc["m"])
        return str(doc["id"]), batch
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any shape problem is one answer
        raise InvalidInput(f"unreadable spool record: {type(exc).__name__}: {exc}") from None


def _b64(data: array[Any]) -> str:
    return base64.b64encode(data.tobytes()).decode("ascii")


def _metric_columns(rows: list[tuple[str, str, float, int, int]]) -> dict[str, Any]:
    runs: dict[str, int] = {}
    keys: dict[str, int] = {}
    run_index = array("I", [runs.setdefault(r[0], len(runs)) for r in rows])
    key_index = array("I", [keys.setdefault(r[1], len(keys)) for r in rows])
    return {
        "r": list(runs),
        "k": list(keys),
        "ri": _b64(run_index),
        "ki": _b64(key_index),
        "v": _b64(array("d", [r[2] for r in rows])),
        "s": _b64(array("q", [r[3] for r in rows])),
        "t": _b64(array("q", [r[4] for r in rows])),
    }


def _column(text: str, code: str) -> list[Any]:
    data = array(code)
    data.frombytes(base64.b64decode(text))
    return data.tolist()


def _metric_rows(columns: dict[str, Any]) -> list[tuple[str, str, float, int, int]]:
    runs, keys = columns["r"], columns["k"]
    run_ids = [runs[i] for i in _column(columns["ri"], "I")]
    key_names = [keys[i] for i in _column(columns["ki"], "I")]
    values = _column(columns["v"], "d")
    steps = _column(columns["s"], "q")
    stamps = _column(columns["t"], "q")
    if not len(run_ids) == len(key_names) == len(values) == len(steps) == len(stamps):
        raise ValueError("metric columns of different lengths")
    return list(zip(run_ids, key_names, values, steps, stamps, strict=True))


# -- one stream's spool, in one process ----------------------------------------------------------
class _OwnSegment:
    """A segment this process writes (locked for its lifetime)."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self.pending = 0  # records not delivered yet
        self.ack_fd = -1
        self.dirty = False


class ClaimedSegment:
    """An orphan segment this process took over (locked until delivered)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.offset = _read_ack(path, len(FILE_MAGIC))
        self.ack_fd = -1
        self.damaged = 0  # bytes after a damaged record, never delivered

    def next(self) -> tuple[Record, bytes] | None:
        """The next record to deliver, or None (the end, or damage: see :attr:`damaged`)."""
        found = read_record(self.fd, self.offset, self.size)
        if found is None and self.offset < self.size:
            self.damaged = self.size - self.offset
        return found

    def rows_left(self) -> tuple[int, int, int | None]:
        """``(records, rows, oldest creation ms)`` not delivered yet."""
        return _count(self.fd, self.offset, self.size)

    def ack(self, record: Record) -> None:
        self.offset = record.end
        self.ack_fd = _write_ack(self.path, self.ack_fd, self.offset)

    def release(self, delete: bool) -> None:
        """Unlock (and, once delivered, delete) the segment."""
        if delete:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            with contextlib.suppress(OSError):
                os.unlink(_ack_path(self.path))
        for fd in (self.ack_fd, self.fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fd = self.ack_fd = -1


class StreamSpool:
    """The spool of one stream (runs, conversations, ...) of one destination, for this process.

    Thread-safe: the writer's collector appends (:meth:`append`), its deliverer reads
    (:meth:`head`, :meth:`read`, :meth:`done`); both under this object's lock.
    """

    def __init__(self, folder: Path, description: str = "") -> None:
        self.folder = Path(folder)
        self.description = description
        self._lock = threading.Lock()
        self._segments: list[_OwnSegment] = []  # oldest first; the last one takes appends
        self._index: deque[tuple[_OwnSegment, Record]] = deque()  # own undelivered records, in order
        self._rows = 0
        self._ready = False
        self.error: OSError | None = None  # the last failed append (a full disk, a read-only folder)

    # -- appending (the collector) -----------------------------------------------------------
    def append(self, items: list[tuple[int, str, int, int, bytes]]) -> None:
        """Append records ``(seq, batch id, rows, created ms, payload)`` in order; raise OSError
        (nothing of the failing record kept) when the disk refuses them."""
        with self._lock:
            try:
                for seq, batch_id, rows, created, payload in items:
                    segment = self._writable(len(payload))
                    data = _header(payload, rows, created) + payload
                    _append(segment, data)
                    record = Record(segment.size - len(data), len(payload), rows, created, seq, batch_id)
                    segment.pending += 1
                    segment.dirty = True
                    self._index.append((segment, record))
                    self._rows += rows
                self.error = None
            except OSError as exc:
                self.error = exc
                raise

    def sync(self) -> None:
        """fsync what was appended since the last sync (the collector calls it in batches)."""
        with self._lock:
            dirty = [s for s in self._segments if s.dirty]
            for segment in dirty:
                segment.dirty = False
        for segment in dirty:
            with contextlib.suppress(OSError):
                os.fdatasync(segment.fd)

    def _writable(self, length: int) -> _OwnSegment:
        if not self._ready:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_description(self.folder.parent, self.description)
            self._ready = True
        current = self._segments[-1] if self._segments else None
        if current is None or (current.size + length > SEGMENT_BYTES and current.size > len(FILE_MAGIC)):
            current = self._new_segment()
        return current

    def _new_segment(self) -> _OwnSegment:
        name = f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}.seg"
        final = self.folder / name
        hidden = self.folder / f".{name}.tmp"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, FILE_MAGIC)
            os.rename(hidden, final)  # visible only once locked
            _sync_folder(self.folder)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise
        segment = _OwnSegment(final, fd, len(FILE_MAGIC))
        self._segments.append(segment)
        return segment

    # -- delivering (the deliverer) ------------------------------------------------------------
    def head(self) -> Record | None:
        """The oldest own record not delivered yet."""
        with self._lock:
            return self._index[0][1] if self._index else None

    def read(self, record: Record) -> bytes:
        """The payload of own record ``record`` (OSError, or InvalidInput if it is damaged)."""
        with self._lock:
            segment = self._index[0][0] if self._index and self._index[0][1] is record else None
        if segment is None:
            raise InvalidInput("spool record not at the head")
        found = read_record(segment.fd, record.offset, segment.size)
        if found is None:
            raise InvalidInput(f"damaged spool record at {record.offset} of {segment.path}")
        return found[1]

    def done(self, record: Record) -> None:
        """Record ``record`` (the head) as delivered; a segment delivered to its end is deleted."""
        with self._lock:
            if not self._index or self._index[0][1] is not record:
                return
            segment, _ = self._index.popleft()
            self._rows -= record.rows
            segment.pending -= 1
            if segment.pending == 0 and segment is not self._segments[-1]:
                self._drop(segment)
            elif segment.pending == 0:  # the appending one, all delivered: start afresh next time
                self._drop(segment)
            else:
                segment.ack_fd = _write_ack(segment.path, segment.ack_fd, record.end)

    def _drop(self, segment: _OwnSegment) -> None:
        self._segments.remove(segment)
        with contextlib.suppress(OSError):
            os.unlink(segment.path)
        with contextlib.suppress(OSError):
            os.unlink(_ack_path(segment.path))
        for fd in (segment.ack_fd, segment.fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- state -----------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows in this process's own segments not delivered yet."""
        return self._rows

    @property
    def records(self) -> int:
        return len(self._index)

    def oldest(self) -> int | None:
        """Creation time (ms) of the oldest own record not delivered yet."""
        with self._lock:
            return self._index[0][1].created if self._index else None

    def close(self) -> None:
        """Sync and release this process's segments (undelivered ones stay for the next process)."""
        self.sync()
        with self._lock:
            segments, self._segments = self._segments, []
            self._index.clear()
            self._rows = 0
        for segment in segments:
            for fd in (segment.ack_fd, segment.fd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    # -- orphans -----------------------------------------------------------------------------------
    def orphans_present(self) -> bool:
        """Whether the folder holds segments other than this process's (cheap: one listing)."""
        own = {s.path.name for s in self._segments}
        return any(name not in own for name in _segment_names(self.folder))

    def claim_orphans(self) -> list[ClaimedSegment]:
        """Lock every segment no live process holds (oldest first); empty ones are deleted."""
        own = {s.path.name for s in self._segments}
        claimed: list[ClaimedSegment] = []
        for name in _segment_names(self.folder):
            if name in own:
                continue
            found = _claim(self.folder / name)
            if found is None:
                continue
            if found.next() is None and not found.damaged:
                found.release(delete=True)  # nothing left to deliver
                continue
            claimed.append(found)
        _remove_stale_hidden(self.folder)
        return claimed


def _append(segment: _OwnSegment, data: bytes) -> None:
    """One record, whole or not at all: a short write (full disk, file size limit) is cut off."""
    start = segment.size
    written = 0
    try:
        while written < len(data):
            count = os.pwrite(segment.fd, memoryview(data)[written:], start + written)
            if count <= 0:
                raise OSError(errno.ENOSPC, "no space left on device")
            written += count
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(segment.fd, start)
        raise
    segment.size = start + written


def _ack_path(path: Path) -> Path:
    return path.with_name(path.name + ".ack")


def _read_ack(path: Path, default: int) -> int:
    try:
        data = _ack_path(path).read_bytes()
    except OSError:
        return default
    return int.from_bytes(data[:8], "little") if len(data) >= 8 else default


def _write_ack(path: Path, fd: int, offset: int) -> int:
    try:
        if fd < 0:
            fd = os.open(_ack_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.pwrite(fd, offset.to_bytes(8, "little"), 0)
    except OSError:  # the ack only saves re-sending: the store skips a batch it has
        pass
    return fd


def _claim(path: Path) -> ClaimedSegment | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # delivered and deleted meanwhile
            raise OSError(errno.ENOENT, "gone")
        if os.pread(fd, len(FILE_MAGIC), 0) != FILE_MAGIC:
            raise OSError(errno.EINVAL, "not a spool segment")
    except OSError:
        os.close(fd)
        return None
    return ClaimedSegment(path, fd)


def _segment_names(folder: Path) -> list[str]:
    try:
        return sorted(name for name in os.listdir(folder) if _NAME.fullmatch(name))
    except OSError:
        return []


def _remove_stale_hidden(folder: Path) -> None:
    """Delete segment files a process created and never renamed (it died in between)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".seg.tmp")]
    except OSError:
        return
    for name in names:
        path = folder / name
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > 3600:
                path.unlink()


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_description(folder: Path, description: str) -> None:
    path = folder / "DESTINATION"
    if description and not path.exists():
        with contextlib.suppress(OSError):
            path.write_text(description + "\n")


def _count(fd: int, offset: int, size: int) -> tuple[int, int, int | None]:
    records = rows = 0
    oldest: int | None = None
    while offset + RECORD.size <= size:
        magic, length, _crc, count, created = RECORD.unpack(os.pread(fd, RECORD.size, offset))
        if magic != RECORD_MAGIC or offset + RECORD.size + length > size:
            break
        records += 1
        rows += count
        oldest = created if oldest is None else min(oldest, created)
        offset += RECORD.size + length
    return records, rows, oldest


# -- what waits where (keel sync --status) --------------------------------------------------------
@dataclasses.dataclass
class SpoolStatus:
    """What waits in one stream folder of one destination."""

    destination: str  # the folder name
    description: str  # the store, credentials masked
    stream: str
    segments: int
    records: int
    rows: int
    oldest: int | None  # creation time (ms) of the oldest record
    held: int  # segments a live process holds (it delivers them itself)
    folder: Path
    held_rows: int = 0  # rows in those

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "store": self.description,
            "stream": self.stream,
            "segments": self.segments,
            "records": self.records,
            "rows": self.rows,
            "oldest_age_s": None if self.oldest is None else round(max(0.0, time.time() - self.oldest / 1000), 1),
            "held_by_live_processes": self.held,
            "held_rows": self.held_rows,
            "folder": str(self.folder),
        }


def scan(root: Path, skip: frozenset[str] = frozenset()) -> list[SpoolStatus]:
    """Every destination and stream with spooled records under ``root`` (reads headers only;
    segment paths in ``skip`` are left out)."""
    found: list[SpoolStatus] = []
    try:
        destinations = sorted(p for p in Path(root).iterdir() if p.is_dir())
    except OSError:
        return found
    for dest in destinations:
        try:
            description = (dest / "DESTINATION").read_text().strip()
        except OSError:
            description = ""
        for stream in STREAMS:
            folder = dest / stream
            names = _segment_names(folder)
            if not names:
                continue
            records = rows = held = held_rows = 0
            oldest: int | None = None
            for name in names:
                path = folder / name
                if str(path) in skip:
                    continue
                with _opened(path) as fd:
                    if fd < 0:
                        continue
                    try:
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        locked = False
                    except OSError:
                        locked = True
                    start = _read_ack(path, len(FILE_MAGIC))
                    n, r, o = _count(fd, start, os.fstat(fd).st_size)
                    records += n
                    rows += r
                    if locked:
                        held += 1
                        held_rows += r
                    if o is not None:
                        oldest = o if oldest is None else min(oldest, o)
            if records:
                found.append(
                    SpoolStatus(
                        dest.name, description, stream, len(names), records, rows, oldest, held, folder, held_rows
                    )
                )
    return found


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield -1
        return
    try:
        yield fd
    finally:
        os.close(fd)
