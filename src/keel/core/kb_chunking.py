"""Deterministic chunking of knowledge-base documents.

A :class:`ChunkConfig` names a splitter and its sizes; :func:`chunk_text`
cuts a text into chunks, always the same way for the same input, so that a
chunk's id (:func:`chunk_id`: the hash of the chunk config and the chunk
text) is stable across processes, machines and keel releases that keep the
same splitter.

Splitters (``chunk_size`` and ``chunk_overlap`` are counted in characters,
except for ``tokens``):

- ``characters``: fixed windows of ``chunk_size`` characters, each starting
  ``chunk_size - chunk_overlap`` characters after the previous one;
- ``tokens``: windows of ``chunk_size`` tokens (words and punctuation marks,
  see :func:`token_spans`) overlapping by ``chunk_overlap`` tokens; a chunk is
  the original text from its first token to its last;
- ``sentences``: whole sentences packed greedily up to ``chunk_size``
  characters; the next chunk repeats the trailing sentences that fit in
  ``chunk_overlap`` characters; a sentence longer than a chunk is cut into
  character windows;
- ``markdown``: one chunk per heading section (``#`` .. ``######`` lines,
  ignoring code fences); a section longer than ``chunk_size`` is packed by
  sentences as above.

Chunks that hold only whitespace are dropped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from keel.core.hashing import canonical_json, hash_bytes
from keel.errors import InvalidInput

__all__ = [
    "SPLITTERS",
    "ChunkConfig",
    "chunk_id",
    "chunk_text",
    "token_spans",
]

SPLITTERS = ("characters", "tokens", "sentences", "markdown")
MAX_CHUNK_SIZE = 1_000_000

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n[ \t]*\n\s*")
_HEADING = re.compile(r"^#{1,6}[ \t]")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut into chunks.

    Args:
        splitter: ``characters``, ``tokens``, ``sentences`` or ``markdown``.
        chunk_size: the largest chunk, in characters (tokens for ``tokens``).
        chunk_overlap: how much consecutive chunks share (same unit); less than ``chunk_size``.
    """

    splitter: str = "characters"
    chunk_size: int = 512
    chunk_overlap: int = 100

    def __post_init__(self) -> None:
        if self.splitter not in SPLITTERS:
            raise InvalidInput(f"unknown splitter {self.splitter!r}", f"use one of {', '.join(SPLITTERS)}")
        for name in ("chunk_size", "chunk_overlap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{name} must be a whole number, not {value!r}", "e.g. chunk_size=512")
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidInput(
                f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}, not {self.chunk_size}", "e.g. chunk_size=512"
            )
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise InvalidInput(
                f"chunk_overlap must be at least 0 and less than chunk_size ({self.chunk_size}), "
                f"not {self.chunk_overlap}",
                "e.g. chunk_size=512, chunk_overlap=100",
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as stored in manifests (and hashed into chunk ids)."""
        return {"splitter": self.splitter, "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}

    @functools.cached_property
    def id_prefix(self) -> bytes:
        """What :func:`chunk_id` hashes before the chunk text."""
        return canonical_json(self.to_dict()) + b"\n"


def chunk_id(text: str, config: ChunkConfig) -> str:
    """The stable id of a chunk: BLAKE3 of the chunk config (canonical JSON), a newline, and the
    chunk text (UTF-8)."""
    return hash_bytes(config.id_prefix + text.encode("utf-8", "surrogatepass"))


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every token: runs of word characters, and single punctuation marks."""
    return [m.span() for m in _TOKEN.finditer(text)]


def chunk_text(text: str, config: ChunkConfig) -> list[str]:
    """Cut ``text`` into chunks (see the module docstring); deterministic."""
    if config.splitter == "characters":
        pieces = list(_windows(text, 0, len(text), config.chunk_size, config.chunk_overlap))
    elif config.splitter == "tokens":
        pieces = _token_windows(text, config.chunk_size, config.chunk_overlap)
    elif config.splitter == "sentences":
        pieces = _pack_sentences(text, 0, len(text), config.chunk_size, config.chunk_overlap)
    else:
        pieces = []
        for start, end in _sections(text):
            if end - start <= config.chunk_size:
                pieces.append(text[start:end].strip())
            else:
                pieces.extend(_pack_sentences(text, start, end, config.chunk_size, config.chunk_overlap))
    return [p for p in pieces if p and not p.isspace()]


def _windows(text: str, start: int, end: int, size: int, overlap: int) -> Iterator[str]:
    step = size - overlap
    while start < end:
        stop = min(start + size, end)
        yield text[start:stop]
        if stop >= end:
            return
        start += step


def _token_windows(text: str, size: int, overlap: int) -> list[str]:
    spans = token_spans(text)
    out = []
    step = size - overlap
    i = 0
    while i < len(spans):
        last = min(i + size, len(spans)) - 1
        out.append(text[spans[i][0] : spans[last][1]])
        if last == len(spans) - 1:
            break
        i += step
    return out


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentences of ``text[start:end]`` as spans without surrounding whitespace."""
    spans = []
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            out.append((a, b))
    return out


def _pack_sentences(text: str, start: int, end: int, size: int, overlap: int) -> list[str]:
    out: list[str] = []
    current: list[tuple[int, int]] = []  # sentence spans in the chunk being built

    def emit() -> None:
        out.append(text[current[0][0] : current[-1][1]])

    for a, b in _sentence_spans(text, start, end):
        if b - a > size:  # too long for any chunk: flush, then cut it into windows
            if current:
                emit()
                current = []
            out.extend(_windows(text, a, b, size, overlap))
            continue
        if current and b - current[0][0] > size:
            emit()
            carried: list[tuple[int, int]] = []
            for span in reversed(current):  # trailing sentences that fit in the overlap
                if current[-1][1] - span[0] > overlap or b - span[0] > size:
                    break
                carried.insert(0, span)
            current = carried
        current.append((a, b))
    if current:
        emit()
    return [p.strip() for p in out]


def _sections(text: str) -> list[tuple[int, int]]:
    """Spans of markdown sections: each starts at a heading line (or the text start)."""
    starts = [0]
    in_fence = False
    pos = 0
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _HEADING.match(line) and pos > 0:
            starts.append(pos)
        pos += len(line)
    ends = [*starts[1:], len(text)]
    return list(zip(starts, ends, strict=True))
