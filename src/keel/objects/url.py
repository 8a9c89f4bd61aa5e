"""Turn an object-store URL into a store (messages name the URL as :func:`keel.core.urls.mask_url` renders it)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from keel.core.urls import mask_url
from keel.errors import InvalidInput
from keel.objects.base import ObjectStore
from keel.objects.local import LocalObjectStore
from keel.objects.memory import MemoryObjectStore

__all__ = ["open_object_store"]


def open_object_store(url: str) -> ObjectStore:
    """``/path`` | ``file:///path`` | ``s3://bucket/prefix[?endpoint_url=...]`` | ``memory://``
    | ``http(s)://host:port`` (a keel server's objects, with the token of
    :func:`keel.transport.token_for`)."""
    if not url or not url.strip():
        raise InvalidInput("the object store URL is empty", "give a path, file:///path or s3://bucket/prefix")
    if url.startswith("memory:"):
        return MemoryObjectStore()
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise InvalidInput(f"invalid S3 URL {mask_url(url)!r}", "write s3://bucket/prefix")
        query = parse_qs(parsed.query)
        from keel.objects.s3 import S3ObjectStore

        return S3ObjectStore(
            bucket=parsed.netloc,
            prefix=parsed.path.strip("/"),
            endpoint_url=query["endpoint_url"][0] if query.get("endpoint_url") else None,
        )
    if url.startswith(("http://", "https://")):
        from keel.objects.http import HttpObjectStore

        return HttpObjectStore(url)
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise InvalidInput(
                f"invalid file URL {mask_url(url)!r}: it names host {parsed.hostname or ''!r}",
                "write file:///absolute/path (three slashes) or a plain path",
            )
        return LocalObjectStore(parsed.path)
    if "://" in url:
        raise InvalidInput(
            f"unsupported object store URL {mask_url(url)!r}",
            "use a local path, file:///path, s3://bucket/prefix, http(s)://keel-server or memory://",
        )
    return LocalObjectStore(url)
