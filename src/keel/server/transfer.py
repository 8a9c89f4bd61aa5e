"""Moving bytes through the server: uploads spooled to a file it owns, downloads streamed.

**Uploads** (:func:`spooled_body`): a request body is written chunk by chunk to a spool
file in the server's own folder (``$TMPDIR/keel-server-<uid>/<kind>-<pid>-<random>.part``,
see :mod:`keel.services.leftovers`), never whole in memory, optionally hashed as it
arrives; the file is removed when the block ends, whatever happens (a refused hash, a
client that goes away, an object store that fails). A process killed mid-upload leaves
it behind: the server's start-up sweep removes it (its pid is in the name).

**Downloads** (:func:`stream_object`): the object's bytes go straight from the store to the
client (a local file read in chunks, S3's response body relayed as it arrives), hashed as
they pass, so the first byte leaves as soon as the store gives it and no temporary copy is
made. When the last byte has passed, the digest is compared with the oid; if they differ
(the stored object is corrupt) the corrupt object is logged at ERROR and the response is
broken off: the body is sent with chunked transfer encoding and its final empty chunk is
never sent, so every HTTP client sees an incomplete response, not a complete wrong file.
``X-Keel-Size`` carries the stored size: a keel client that received that many bytes that
do not hash to the oid raises :class:`~keel.errors.IntegrityError` (a shorter body is a
broken connection). A missing object is a 404 before anything is sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from keel.core.hashing import new_hasher
from keel.errors import IntegrityError, KeelError, StoreError, TooLarge
from keel.objects.base import CHUNK, ObjectStore, check_oid
from keel.server.context import ServerContext
from keel.services.leftovers import new_spool_file

__all__ = [
    "SIZE_HEADER",
    "DownloadAborted",
    "Spooled",
    "content_disposition",
    "open_object",
    "spooled_body",
    "stream_object",
]

SIZE_HEADER = "X-Keel-Size"  # the stored size of a streamed object (the body itself is chunked)
log = logging.getLogger("keel.server")


@dataclass
class Spooled:
    """A request body on disk: its path, size and (when asked) BLAKE3 hex digest."""

    path: str
    size: int
    digest: str | None = None


@contextlib.asynccontextmanager
async def spooled_body(
    request: Request, context: ServerContext, kind: str, *, hash_it: bool = False
) -> AsyncIterator[Spooled]:
    """The request body written to a new spool file (hashed as it arrives with ``hash_it``);
    TooLarge past the server's ``max_upload``. The file is removed when the block exits."""
    fd, path = new_spool_file(context.spool_dir, kind)
    try:
        hasher = new_hasher() if hash_it else None
        size = 0
        with os.fdopen(fd, "wb") as out:

            def take(chunk: bytes) -> None:
                if hasher is not None:
                    hasher.update(chunk)
                out.write(chunk)

            async for chunk in request.stream():
                size += len(chunk)
                if size > context.max_upload:
                    raise TooLarge(f"upload is over the limit of {context.max_upload} bytes", "split it")
                if chunk:
                    await run_in_threadpool(take, chunk)
        yield Spooled(path, size, hasher.hexdigest() if hasher is not None else None)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def open_object(objects: ObjectStore, oid: str) -> tuple[int | None, Iterator[bytes]]:
    """``(stored size or None, chunks)`` of ``oid``, unverified, straight from the store;
    NotFound now if it is absent. Stores without a streaming read (memory) give one chunk."""
    return objects.open_stream(check_oid(oid), CHUNK)


class DownloadAborted(Exception):  # noqa: N818 - it says what happened
    """A streamed download broken off after its response had started (its cause says why:
    a corrupt object, a store that failed mid-way). Not a KeelError on purpose: no handler
    can answer once the response started; the request's failure report logs it."""


def _verified(objects: ObjectStore, oid: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks``, hashed as they pass; after the last one, DownloadAborted (from an
    IntegrityError) if they do not hash to ``oid``, and from a StoreError if the store fails
    mid-way: the response then breaks off."""
    hasher = new_hasher()
    size = 0
    try:
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except OSError as exc:  # a local read error; an OSError would pass for a client disconnect
                    raise StoreError(
                        f"reading object {oid} failed: {exc.strerror or exc}", "check the object store's disk"
                    ) from exc
                hasher.update(chunk)
                size += len(chunk)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        got = hasher.hexdigest()
        if got != oid:
            where = objects.describe(oid)
            log.error(
                "object %s is corrupt: its %d bytes hash to %s (%s); the download was broken off. "
                "Restore it from a backup or a remote; 'keel verify' lists every corrupt object",
                oid,
                size,
                got,
                where,
            )
            raise IntegrityError(
                f"object {oid} is corrupt: its content no longer matches its hash ({where})",
                "restore it from a remote or a backup; 'keel verify' lists every corrupt object",
            )
    except KeelError as exc:
        raise DownloadAborted(f"the download of object {oid} was broken off after {size} bytes: {exc}") from exc


def content_disposition(filename: str, inline: bool = False) -> str:
    """A Content-Disposition naming ``filename`` (RFC 6266; anything but plain ASCII via ``filename*``)."""
    kind = "inline" if inline else "attachment"
    quoted = quote(filename)
    if quoted != filename:
        return f"{kind}; filename*=utf-8''{quoted}"
    return f'{kind}; filename="{filename}"'


def stream_object(
    objects: ObjectStore,
    oid: str,
    *,
    filename: str | None = None,
    inline: bool = False,
    media_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """The response that streams ``oid`` from ``objects`` while hashing it (see the module
    doc); NotFound before anything is sent if it is absent."""
    length, chunks = open_object(objects, oid)
    sent = {"X-Keel-Oid": oid, **(headers or {})}
    if length is not None:
        sent[SIZE_HEADER] = str(length)
    if filename:
        sent["Content-Disposition"] = content_disposition(filename, inline)
    return StreamingResponse(_verified(objects, oid, chunks), media_type=media_type, headers=sent)
