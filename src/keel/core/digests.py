"""Content digests of immutable records, so ``keel verify`` finds a silently changed byte.

A digest is a BLAKE3 of a canonical encoding of what a record stores, computed
when the record becomes immutable and stored beside it:

- a run, when it finishes (status leaves ``running``): its own fields, params,
  tags, metric series (the packed chunks, byte for byte), metric summaries,
  summary document, artifacts and lineage. Each part has its own section
  digest, so a mismatch says *what* changed (:data:`RUN_SECTIONS`);
- a prompt version and a model version, when created (what never changes of
  them; a model version's stage, description and tags are mutable);
- a reflog entry, when appended: a hash chain per ref, each entry's digest
  covering the previous entry's, so a changed, removed or reordered entry
  breaks the chain where it happened.

Everything here is pure: the rows come from the store (or from the batch that
writes them) and the encoding is the same either way. The encodings are frozen:
digests already stored must keep matching, so a change needs a new format (a
run digest of another length or a prefix) that verify tells apart. Column types are
normalised as the database stores them: REAL values are floats with -0.0
stored as 0.0 (SQLite keeps no sign on zero), booleans are 0/1.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import blake3

__all__ = [
    "RUN_DIGEST_LENGTH",
    "RUN_SECTIONS",
    "RunContent",
    "changed_sections",
    "model_version_digest",
    "prompt_version_digest",
    "reflog_digest",
]

#: The parts of a run a digest tells apart, in the order they are encoded.
RUN_SECTIONS = ("run", "params", "tags", "metrics", "latest", "summary", "artifacts", "lineage")
_PART = 12  # hex digits kept per section digest (they only locate a change the full digest found)
#: ``<64 hex digest>/<12 hex per section>``
RUN_DIGEST_LENGTH = 64 + 1 + _PART * len(RUN_SECTIONS)

_CHUNK = struct.Struct("<qqqQQQ")  # count, min step, max step, array lengths
_LATEST = struct.Struct("<Bqqqddd")  # flags, step, timestamp, count, value, min, max
_STR = struct.Struct("<I")
_SMALL_ARRAYS = 96  # a chunk's arrays up to this size are encoded as they are, larger ones by their BLAKE3
# One encoder, built once (json.dumps with options builds a new one per call, ~5 us): the
# C encoder itself where there is one (JSONEncoder.encode also sets it up per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=True)


def _no_default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a stored value")


_make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    _make_c_encoder(None, _no_default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _make_c_encoder is not None
    else None
)


def _encode(value: list[Any]) -> bytes:
    """Compact JSON of a list, UTF-8. Lone surrogates cannot be stored by keel, but a
    damaged or foreign row may hold anything: it is encoded, the digest just differs."""
    text = "".join(_C_ENCODER(value, 0)) if _C_ENCODER is not None else _ENCODER.encode(value)
    return text.encode("utf-8", "surrogatepass")


def _hash(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


_EMPTY = _hash(b"[]")


def _section(rows: dict[Any, list[Any]]) -> bytes:
    """The digest of one section's rows (JSON), sorted by their key."""
    if not rows:
        return _EMPTY
    return _hash(_encode([rows[key] for key in sorted(rows)]))


def _text_section(rows: Mapping[str, tuple[str, ...]]) -> bytes:
    """The digest of one section of text-only rows (params, tags), sorted by key: the fields
    joined with NUL, which stored text never holds (a damaged field that gains one still
    changes the bytes). Cheaper than JSON on the write path."""
    if not rows:
        return _EMPTY
    fields = [field for key in sorted(rows) for field in rows[key]]
    return _hash("\x00".join(fields).encode("utf-8", "surrogatepass"))


def _binary_section(rows: dict[str, bytes]) -> bytes:
    """The digest of one section of binary rows (each starting with its key), sorted by key."""
    if not rows:
        return _EMPTY
    return _hash(b"".join([rows[key] for key in sorted(rows)]))


@functools.lru_cache(maxsize=4096)  # metric keys repeat from run to run
def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return _STR.pack(len(data)) + data


class RunContent:
    """A run's rows as stored, gathered part by part; :meth:`digest` encodes and hashes them.

    Rows are kept by their unique key (a param's key, an artifact's path, a lineage
    edge's identity, ...) and encoded sorted by it, so they may be added in any order,
    except metric chunks: those of one key must come in the order they were written.
    Params and tags are their text joined with NUL; the run's own row, artifacts and
    lineage are JSON; metric chunks and metric summaries are binary (``struct``,
    floats as their IEEE bits: making their text is slow), -0.0 as 0.0 (SQLite stores no
    sign on a REAL zero).
    """

    __slots__ = ("artifacts", "chunks", "latest", "lineage", "params", "run", "summary", "tags")

    def __init__(self) -> None:
        self.run: list[Any] = []
        self.summary = ""
        self.params: dict[str, tuple[str, str, str]] = {}
        self.tags: dict[str, tuple[str, str]] = {}
        self.chunks: dict[str, bytes] = {}
        self.latest: dict[str, bytes] = {}
        self.artifacts: dict[str, list[Any]] = {}
        self.lineage: dict[tuple[str, ...], list[Any]] = {}

    def set_run(
        self,
        run_id: str,
        status: str,
        start_time: int,
        end_time: int | None,
        parent_id: str | None,
        error: str | None,
        context: str,
        summary: str,
    ) -> None:
        """The run's own row (its name and deleted flag are labels, not covered)."""
        self.run = [
            run_id,
            status,
            int(start_time),
            None if end_time is None else int(end_time),
            parent_id,
            error,
            context,
        ]
        self.summary = summary

    @property
    def status(self) -> str:
        """The run's status as stored (set by :meth:`set_run`)."""
        return str(self.run[1]) if self.run else ""

    def add_param(self, key: str, vtype: str, value: str) -> None:
        """One ``params`` row."""
        self.params[key] = (key, vtype, value)

    def add_tag(self, key: str, value: str) -> None:
        """One ``tags`` row."""
        self.tags[key] = (key, value)

    @staticmethod
    def encode_chunk(count: int, min_step: int, max_step: int, steps: bytes, timestamps: bytes, vals: bytes) -> bytes:
        """One ``metric_chunks`` row, binary (floats as IEEE bits: their text form is slow
        to make). Small arrays are encoded as they are, larger ones by their BLAKE3, so a
        long history is hashed as it is read, never held."""
        head = _CHUNK.pack(int(count), int(min_step), int(max_step), len(steps), len(timestamps), len(vals))
        if len(steps) + len(timestamps) + len(vals) <= _SMALL_ARRAYS:
            return head + steps + timestamps + vals
        hasher = blake3.blake3(steps)
        hasher.update(timestamps)
        hasher.update(vals)
        return head + hasher.digest()

    def add_chunk(self, key: str, row: bytes) -> None:
        """One ``metric_chunks`` row of ``key`` as :meth:`encode_chunk` made it; the chunks
        of one key must be added in the order they were written."""
        found = self.chunks.get(key)
        self.chunks[key] = (_text(key) + row) if found is None else (found + row)

    def add_latest(
        self,
        key: str,
        value: Any,
        is_nan: Any,
        step: int,
        timestamp: int,
        min_value: Any,
        max_value: Any,
        count: int,
    ) -> None:
        """One ``latest_metrics`` row (binary; a NULL number is a flag bit, -0.0 is 0.0)."""
        flags = 1 if is_nan else 0
        if value is None:
            flags |= 2
            value = 0.0
        if min_value is None:
            flags |= 4
            min_value = 0.0
        if max_value is None:
            flags |= 8
            max_value = 0.0
        self.latest[key] = _text(key) + _LATEST.pack(
            flags, step, timestamp, count, value + 0.0, min_value + 0.0, max_value + 0.0
        )

    def add_series(
        self,
        key: str,
        steps: bytes,
        timestamps: bytes,
        vals: bytes,
        count: int,
        min_step: int,
        max_step: int,
        latest: Any,
        latest_step: int,
        latest_timestamp: int,
        min_value: Any,
        max_value: Any,
    ) -> None:
        """A new series' only chunk and its ``latest_metrics`` row at once, as
        :meth:`add_chunk` and :meth:`add_latest` would add them (``latest``: NaN or a
        number): the write path's shortcut for a run created and finished by one batch."""
        head = _text(key)
        size = len(steps) + len(timestamps) + len(vals)
        row = _CHUNK.pack(count, min_step, max_step, len(steps), len(timestamps), len(vals))
        if size <= _SMALL_ARRAYS:
            row += steps + timestamps + vals
        else:
            hasher = blake3.blake3(steps)
            hasher.update(timestamps)
            hasher.update(vals)
            row += hasher.digest()
        found = self.chunks.get(key)
        self.chunks[key] = head + row if found is None else found + row
        flags = 0
        if latest != latest:
            flags, latest = 3, 0.0
        if min_value is None:
            flags |= 4
            min_value = 0.0
        if max_value is None:
            flags |= 8
            max_value = 0.0
        self.latest[key] = head + _LATEST.pack(
            flags, latest_step, latest_timestamp, count, latest + 0.0, min_value + 0.0, max_value + 0.0
        )

    def add_artifact(self, path: str, oid: str, size: int, kind: str, created_at: int) -> None:
        """One ``artifacts`` row."""
        self.artifacts[path] = [path, oid, int(size), kind, int(created_at)]

    def add_edge(self, direction: str, kind: str, entity_id: str, version: str, role: str, created_at: int) -> None:
        """One ``lineage`` row of the run."""
        self.lineage[(direction, kind, entity_id, version, role)] = [
            direction,
            kind,
            entity_id,
            version,
            role,
            int(created_at),
        ]

    def section_digests(self) -> list[bytes]:
        """One BLAKE3 per section of :data:`RUN_SECTIONS`."""
        return [
            _hash(_encode(self.run)),
            _text_section(self.params),
            _text_section(self.tags),
            _binary_section(self.chunks),
            _binary_section(self.latest),
            _hash(self.summary.encode("utf-8", "surrogatepass")),
            _section(self.artifacts),
            _section(self.lineage),
        ]

    def digest(self) -> str:
        """``<BLAKE3 of the section digests>/<the first 12 hex digits of each>``."""
        parts = self.section_digests()
        whole = blake3.blake3(b"keel-run-1")
        for part in parts:
            whole.update(part)
        return str(whole.hexdigest()) + "/" + b"".join([part[: _PART // 2] for part in parts]).hex()


def changed_sections(stored: str, computed: str) -> list[str]:
    """Which sections of a run differ between a stored and a recomputed digest.

    Empty when the stored digest text itself is what changed (its sections all match)
    or cannot be read; the caller says so.
    """
    if len(stored) != RUN_DIGEST_LENGTH or stored[64:65] != "/":
        return []
    old, new = stored[65:], computed[65:]
    return [
        name
        for i, name in enumerate(RUN_SECTIONS)
        if old[i * _PART : (i + 1) * _PART] != new[i * _PART : (i + 1) * _PART]
    ]


def prompt_version_digest(
    name: str,
    version: str,
    parts: Sequence[int],
    content: str,
    content_hash: str,
    variables: str,
    changelog: str,
    author: str,
    created_at: int,
) -> str:
    """The digest of a prompt version row (its content and variables as the stored JSON text)."""
    major, minor, patch = (int(p) for p in parts)
    row = ["prompt_version", name, version, major, minor, patch, content, content_hash, variables, changelog, author]
    return blake3.blake3(_encode([*row, int(created_at)])).hexdigest()


def model_version_digest(
    name: str,
    version: int,
    source: str,
    run_id: str | None,
    card: str,
    card_text: str | None,
    author: str,
    created_at: int,
) -> str:
    """The digest of what never changes in a model version (stage, description and tags do)."""
    row = ["model_version", name, int(version), source, run_id, card, card_text, author, int(created_at)]
    return blake3.blake3(_encode(row)).hexdigest()


def reflog_digest(
    previous: str | None,
    kind: str,
    name: str,
    ref: str,
    old: str | None,
    new: str | None,
    at: int,
    who: str,
    reason: str,
) -> str:
    """The digest of a reflog entry, chained to the previous entry of the same ref
    (``previous``: its digest; None for the first entry, or one from before digests)."""
    row = ["reflog", previous or "", kind, name, ref, old, new, int(at), who, reason]
    return blake3.blake3(_encode(row)).hexdigest()
