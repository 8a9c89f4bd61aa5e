"""Embedders: the protocol, vector helpers, and the built-in hashing embedder.

An embedder turns texts into float32 vectors. keel stores embeddings by
``(embedder.id, chunk id)``, so ``id`` must change whenever the vectors
would (another model, another dimension, another algorithm).

:class:`HashingEmbedder` needs no model download: it hashes each lower-cased
word into one of ``dimension`` buckets with a pseudo-random sign (feature
hashing), then L2-normalises. Texts sharing words get similar vectors, which
is enough for tests, demos and keyword-like retrieval; it is deterministic
on every machine (BLAKE2b of the word picks the bucket and sign).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from keel.errors import InvalidInput

__all__ = ["HASHING_PREFIX", "Embedder", "HashingEmbedder", "check_vectors", "normalize_rows"]

HASHING_PREFIX = "hashing-"
_WORD = re.compile(r"\w+")
_CACHE_MAX = 1_000_000  # words remembered per embedder (bucket and sign)


@runtime_checkable
class Embedder(Protocol):
    """What keel needs from an embedding model.

    Attributes:
        id: names the vectors: equal ids must mean equal vectors for equal texts.
        dimension: the vector length, or None until the first call tells.
    """

    id: str
    dimension: int | None

    def embed(self, texts: Sequence[str]) -> Any:
        """A ``(len(texts), dimension)`` array (any float dtype; keel stores float32)."""
        ...


def normalize_rows(matrix: Any) -> Any:
    """``matrix`` as C-contiguous float32 with every non-zero row scaled to length 1."""
    out = np.array(matrix, dtype=np.float32, copy=True, order="C")
    if out.ndim != 2:
        raise InvalidInput(f"embeddings must be a 2-D array, got shape {out.shape}", "return one vector per text")
    norms = np.linalg.norm(out, axis=1)
    norms[norms == 0] = 1.0
    out /= norms[:, None]
    return out


def check_vectors(vectors: Any, count: int, dimension: int | None, who: str) -> Any:
    """Validate an embedder's output: ``count`` finite rows of ``dimension`` values; returns float32."""
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] != count:
        raise InvalidInput(
            f"embedder {who} returned an array of shape {array.shape} for {count} texts",
            "an embedder returns one vector per text",
        )
    if dimension is not None and array.shape[1] != dimension:
        raise InvalidInput(
            f"embedder {who} returned {array.shape[1]}-dimensional vectors; this knowledge base holds "
            f"{dimension}-dimensional ones",
            "use the embedder the knowledge base was built with, or configure a new embedding_model "
            "(a full re-embed: commit with reembed=True)",
        )
    if not np.all(np.isfinite(array)):
        raise InvalidInput(f"embedder {who} returned NaN or infinite values", "check the embedding model")
    return normalize_rows(array)


class _Buckets(dict[str, int]):
    """A word -> signed bucket memo that computes what it misses (bounded)."""

    def __init__(self, compute: Any) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, word: str) -> int:
        found: int = self._compute(word)
        if len(self) < _CACHE_MAX:
            self[word] = found
        return found


class HashingEmbedder:
    """Feature hashing of words into ``dimension`` signed buckets, L2-normalised (float32).

    >>> HashingEmbedder(8).embed(["refund policy"]).shape
    (1, 8)
    """

    def __init__(self, dimension: int = 384) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= 65536:
            raise InvalidInput(f"invalid hashing dimension {dimension!r}", "use e.g. hashing-384")
        self.dimension: int | None = dimension
        self._dim = dimension
        self.id = f"{HASHING_PREFIX}{dimension}"
        self._buckets = _Buckets(self._bucket)  # word -> signed bucket: +(i+1) or -(i+1)

    def __repr__(self) -> str:
        return f"HashingEmbedder({self._dim})"

    def _bucket(self, word: str) -> int:
        digest = int.from_bytes(
            hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
        )
        index = (digest >> 1) % self._dim + 1
        return -index if digest & 1 else index

    def embed(self, texts: Sequence[str]) -> Any:
        """One L2-normalised float32 row per text (an all-zero row for a text without words)."""
        lookup = self._buckets.__getitem__
        rows: list[int] = []
        cols: list[int] = []
        for row, text in enumerate(texts):
            signed = list(map(lookup, _WORD.findall(text.lower())))
            cols.extend(signed)
            rows.extend([row] * len(signed))
        n, dim = len(texts), self._dim
        if not cols:
            return np.zeros((n, dim), dtype=np.float32)
        signed_array = np.asarray(cols, dtype=np.int64)
        flat = np.asarray(rows, dtype=np.int64) * dim + (np.abs(signed_array) - 1)
        weights = np.sign(signed_array).astype(np.float64)
        matrix = np.bincount(flat, weights=weights, minlength=n * dim).reshape(n, dim)
        return normalize_rows(matrix)
