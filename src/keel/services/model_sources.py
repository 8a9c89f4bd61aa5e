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

An ``s3://bucket/key`` source is pinned by its objects' ETags: ``etag:<hex>``,
the SHA-256 over one line ``<key relative to the source>\0<ETag>\n`` per
object, in key order (one object: the key itself, relative path empty; a
prefix: every object under ``key/``, at most :data:`MAX_S3_OBJECTS`). An ETag
changes when an object's bytes do, so a re-upload of other weights under the
same URI changes the digest. It is read where ``keel.models.register`` runs,
with that process's credentials (``AWS_*``, ``AWS_ENDPOINT_URL``) and never by a
server, which must not call a location a client chose. When boto3 is not
installed or the bucket cannot be read, nothing is pinned (the registration
still succeeds). ``gs://`` and ``hf://`` sources are not pinned.

``runs:/`` sources need none (the run's artifacts are content-addressed
objects already). ``keel verify`` re-hashes pinned sources (:func:`check_sources`)
and lists the versions whose bytes changed or are gone; an S3 source it cannot
reach is counted as unchecked, not as drift.
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

__all__ = [
    "MAX_S3_OBJECTS",
    "SourceDrift",
    "check_digest",
    "check_sources",
    "digest_path",
    "local_source",
    "s3_digest",
    "source_digest",
]

_CHUNK = 1 << 20
_DIGEST = re.compile(r"(sha256|etag):[0-9a-f]{64}")
#: The most objects an ``s3://`` prefix may hold to be pinned (more: not pinned).
MAX_S3_OBJECTS = 10_000


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


def _s3_location(source: str) -> tuple[str, str] | None:
    if not isinstance(source, str) or not source.startswith("s3://"):
        return None
    parsed = urlparse(source)
    if not parsed.netloc:
        return None
    return parsed.netloc, unquote(parsed.path).lstrip("/")


def _s3_lines(bucket: str, key: str) -> list[tuple[str, str]] | None:
    """``(relative key, ETag)`` of the object ``key`` or of the objects under ``key/``;
    None when the bucket cannot be read (raises nothing: pinning is best effort)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        return None
    config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2})
    try:
        client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)
        if key and not key.endswith("/"):
            try:
                head = client.head_object(Bucket=bucket, Key=key)
                return [("", str(head["ETag"]).strip('"'))]
            except Exception as exc:  # noqa: BLE001 - a 404 means "look for a prefix"; others below
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 404:
                    return None
        prefix = key.rstrip("/") + "/" if key else ""
        lines: list[tuple[str, str]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                lines.append((item["Key"][len(prefix) :], str(item["ETag"]).strip('"')))
                if len(lines) > MAX_S3_OBJECTS:
                    return None
        return lines
    except Exception:  # noqa: BLE001 - no credentials, no network, no bucket: not pinned / unchecked
        return None


def s3_digest(source: str) -> str | None:
    """``etag:<hex>`` of an ``s3://`` source (see the module doc); ``""`` when nothing is
    there; None when it is not an S3 URI or cannot be read from here."""
    location = _s3_location(source)
    if location is None:
        return None
    lines = _s3_lines(*location)
    if lines is None:
        return None
    if not lines:
        return ""
    tree = hashlib.sha256()
    for rel, etag in sorted(lines):
        tree.update(f"{rel}\0{etag}\n".encode())
    return "etag:" + tree.hexdigest()


def source_digest(source: str, base: Path | None = None) -> str | None:
    """The digest of a local or S3 source that exists (relative paths from ``base``, default
    the current folder); None for other URIs, ``runs:/`` sources and what is not there."""
    if _s3_location(source) is not None:
        return s3_digest(source) or None
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
    """A ``source_digest`` argument as stored: None, or ``sha256:``/``etag:`` and 64 lowercase hex digits."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(
            f"invalid source digest {str(value)[:80]!r}",
            "give sha256:<64 hex digits>, or leave it out (keel.models.register computes it for a local "
            "path or an s3:// source)",
        )
    return value


def check_sources(rows: Any, base: Path | None, unchecked: list[Any] | None = None) -> list[SourceDrift]:
    """The pinned versions among ``rows`` (each with ``name``, ``version``, ``source`` and
    ``source_digest``) whose source now hashes differently or is gone. An S3 source that
    cannot be read from here is appended to ``unchecked`` (when given), not reported."""
    drift = []
    for row in rows:
        recorded = row.source_digest
        if not recorded:
            continue
        if recorded.startswith("etag:"):
            found = s3_digest(row.source)
            if found is None:
                if unchecked is not None:
                    unchecked.append(row)
                continue
            now: str | None = found or None
        else:
            now = source_digest(row.source, base)
        if now != recorded:
            drift.append(SourceDrift(row.name, row.version, row.source, recorded, now))
    return drift
