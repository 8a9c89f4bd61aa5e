"""Pinned model sources: what bytes a version registered from a local path meant.

A model version whose source is a local file or folder (a plain path or a
``file://`` URI) records ``source_digest`` when it is registered:

- a file: ``sha256:<hex>`` of its bytes;
- a folder: ``sha256:<hex>`` over its files in sorted order of their relative
  paths (``/``-separated), one line ``<path>\\0<sha256 of the file>\\n`` each,
  so a renamed, added, removed or edited file changes it. Symbolic links are
  followed for files and not entered for folders.

SHA-256 rather than keel's BLAKE3 object ids: it is the digest other tools
print (``sha256sum``, Hugging Face's LFS pointers), so a user can check it by hand.

``runs:/`` sources need none (the run's artifacts are content-addressed
objects already). Object-store URIs (``s3://``, ``gs://``, ``hf://``) are not
pinned: reading their ETag or version id means calling a location the caller
chose, with the credentials of whoever registers (a server must never do that),
so nothing is recorded for them. ``keel verify`` re-hashes pinned sources
(:func:`check_sources`) and lists the versions whose bytes changed or are gone.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from keel.errors import InvalidInput

__all__ = ["SourceDrift", "check_digest", "check_sources", "digest_path", "local_source", "source_digest"]

_CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class SourceDrift:
    """A pinned source whose bytes are no longer the registered ones (``now`` None: it is gone)."""

    name: str
    version: int
    source: str
    recorded: str
    now: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "model": self.name,
            "version": self.version,
            "source": self.source,
            "recorded": self.recorded,
            "now": self.now,
        }


def local_source(source: str) -> Path | None:
    """The local path a source names (a plain path or ``file://``), else None (URIs, ``runs:/``)."""
    if not isinstance(source, str) or not source.strip():
        return None
    if source.startswith("file://"):
        return Path(unquote(urlparse(source).path))
    if "://" in source or source.startswith(("runs:/", "models:/")):
        return None
    return Path(source)


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def digest_path(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, or of a folder's tree (see the module doc)."""
    if path.is_file():
        return "sha256:" + _file_sha256(path)
    tree = hashlib.sha256()
    files = []
    for folder, _dirs, names in os.walk(path):
        for file_name in names:
            full = Path(folder) / file_name
            if full.is_file():
                files.append((full.relative_to(path).as_posix(), full))
    for rel, full in sorted(files):
        tree.update(f"{rel}\0{_file_sha256(full)}\n".encode())
    return "sha256:" + tree.hexdigest()


def source_digest(source: str, base: Path | None = None) -> str | None:
    """The digest of a local source that exists (relative paths from ``base``, default the
    current folder); None for URIs, ``runs:/`` sources and paths that do not exist here."""
    path = local_source(source)
    if path is None:
        return None
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        if not (path.is_file() or path.is_dir()):
            return None
        return digest_path(path)
    except OSError:
        return None


def check_digest(value: Any) -> str | None:
    """A ``source_digest`` argument as stored: None, or ``sha256:`` and 64 lowercase hex digits."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(
            f"invalid source digest {str(value)[:80]!r}",
            "give sha256:<64 hex digits>, or leave it out (keel.models.register computes it for a local path)",
        )
    return value


def check_sources(rows: Any, base: Path | None) -> list[SourceDrift]:
    """The pinned versions among ``rows`` (each with ``name``, ``version``, ``source`` and
    ``source_digest``) whose local source now hashes differently or is gone."""
    drift = []
    for row in rows:
        recorded = row.source_digest
        if not recorded:
            continue
        now = source_digest(row.source, base)
        if now != recorded:
            drift.append(SourceDrift(row.name, row.version, row.source, recorded, now))
    return drift
