"""Content hashing (BLAKE3, hex) and canonical JSON encoding."""

from __future__ import annotations

import json
import math
from typing import Any

import blake3

__all__ = ["OID_LENGTH", "canonical_json", "hash_bytes", "is_oid", "new_hasher"]

OID_LENGTH = 64  # hex digits of a 256-bit BLAKE3 digest


def new_hasher() -> Any:
    """A streaming BLAKE3 hasher (``update(bytes)``, ``hexdigest()``)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def hash_bytes(data: bytes) -> str:
    """The object id (hex BLAKE3) of ``data``."""
    if len(data) > 1 << 20:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()
    return blake3.blake3(data).hexdigest()


def is_oid(text: str) -> bool:
    """True if ``text`` looks like a full object id."""
    return len(text) == OID_LENGTH and all(c in "0123456789abcdef" for c in text)


def _default(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8, NaN/inf as strings.

    Two equal values always encode to the same bytes, so their hash is stable.
    """

    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        if isinstance(v, dict):
            return {str(k): fix(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [fix(x) for x in v]
        return v

    return json.dumps(fix(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode(
        "utf-8"
    )
