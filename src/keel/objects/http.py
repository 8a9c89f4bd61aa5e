"""A keel server's objects as an object store (:class:`HttpObjectStore`).

:class:`HttpObjectStore` is an :class:`~keel.objects.base.ObjectStore` over the
server's ``/api/v1/objects`` endpoints, so a keel server is a data remote like a
folder or a bucket (``keel remote add origin http://host:port``). When the
server's store is S3, downloads follow a short-lived presigned URL straight to
the bucket. It talks through :class:`keel.transport.HttpClient` (timeouts,
retries, proxies, TLS, streaming); the token comes from
:mod:`keel.transport.credentials` (``KEEL_TOKEN`` or ``keel login``).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from keel.core.hashing import hash_bytes, is_oid, new_hasher
from keel.errors import NotFound, StoreError
from keel.objects.base import CHUNK, Capabilities, ObjectInfo, ObjectStore, check_oid
from keel.transport.credentials import token_for

if TYPE_CHECKING:  # httpx is loaded when a store is opened, not when this module is imported
    from keel.transport.client import HttpClient, HttpResponse

__all__ = ["HttpObjectStore"]

API = "/api/v1"
SIZE_HEADER = "X-Keel-Size"  # the stored size of an object the server streams (keel.server.transfer)


# -- objects over HTTP --------------------------------------------------------------------------
_REDIRECTS = (301, 302, 303, 307, 308)


class HttpObjectStore(ObjectStore):
    """The content-addressed objects of a keel server, over ``/api/v1/objects``.

    Uploads stream from disk (the server hashes what it receives and refuses a body
    that does not match its oid); downloads stream and are verified here against the
    oid. When the server keeps its objects in S3, downloads are redirected to a
    short-lived presigned URL and read straight from the bucket
    (``presigned_downloads`` counts them); if the bucket cannot be reached from
    here, downloads go through the server instead. Existence checks go in batches.

    Args:
        base_url: ``http://host:port`` of the server.
        token: the API token; default :func:`token_for` (``KEEL_TOKEN`` or ``keel login``).
        presign: ask for presigned downloads when the server can give them.
        timeout: seconds to wait for the next bytes of a reply (when no ``transport`` is given).
        transport: an existing :class:`~keel.transport.HttpClient` to share (its token wins).
    """

    BATCH = 1000  # oids per existence check
    capabilities = Capabilities(transfer_jobs=8)  # a keel server: one connection per thread

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        presign: bool = True,
        timeout: float = 300.0,
        transport: HttpClient | None = None,
    ) -> None:
        if transport is None:
            from keel.transport.client import HttpClient

            transport = HttpClient(base_url, token if token is not None else token_for(base_url), timeout=timeout)
        self.transport = transport
        self.url = transport.base_url
        self.presign = presign
        self.timeout = timeout
        self.presigned_downloads = 0
        #: a data push: ask the server to pin what it stores or finds (its gc keeps them: the
        #: versions naming them are in this client's database; docs/gc.md)
        self.pin = False
        self._count_lock = threading.Lock()

    def _path(self, oid: str) -> str:
        return f"{API}/objects/{check_oid(oid)}"

    def describe(self, oid: str) -> str:
        return self.transport.url(self._path(oid))

    def exists(self, oid: str) -> bool:
        if not is_oid(oid):
            return False
        try:
            self.transport.request("HEAD", self._path(oid)).close()
        except NotFound:
            return False
        return True

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        return self._present(oids, pin=False)

    def _present(self, oids: Iterable[str], pin: bool) -> set[str]:
        wanted = sorted({oid for oid in oids if is_oid(oid)})
        present: set[str] = set()
        for start in range(0, len(wanted), self.BATCH):
            batch = wanted[start : start + self.BATCH]
            body: dict[str, object] = {"oids": batch, "pin": True} if pin else {"oids": batch}
            reply = self.transport.call("POST", f"{API}/objects/missing", body, idempotent=True)
            missing = set(reply.get("missing", ())) if isinstance(reply, dict) else set()
            present.update(oid for oid in batch if oid not in missing)
        return present

    def put_bytes(self, data: bytes) -> str:
        oid = hash_bytes(data)
        self._write(oid, data)  # one round trip: storing what the server has is a no-op there
        return oid

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        hasher = new_hasher()
        size = 0
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    hasher.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", "check the file") from None
        oid = hasher.hexdigest()
        # A small file is cheaper to send than to ask about; a large one is asked about first.
        if size <= CHUNK or not self.exists(oid):
            self._write_file(oid, Path(path))
        return oid, size

    def _put_path(self, oid: str) -> str:
        return self._path(oid) + ("?pin=1" if self.pin else "")

    def _write(self, oid: str, data: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        self.transport.request("PUT", self._put_path(oid), body=data, headers=headers).close()

    def _write_file(self, oid: str, path: Path) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", "check the file") from None
        with fh:
            self.transport.request("PUT", self._put_path(oid), body=fh, headers=headers).close()

    def _open(self, oid: str) -> HttpResponse:
        """The reply carrying ``oid``'s bytes: from the server, or from S3 via a presigned URL."""
        headers = {"Prefer": "presigned"} if self.presign else None
        response = self.transport.request("GET", self._path(oid), headers=headers)
        if response.status not in _REDIRECTS:
            return response
        location = response.headers.get("Location")
        response.read()
        if not location:
            raise StoreError(f"{self.describe(oid)} redirected nowhere", "is this URL a keel server?")
        try:
            direct = self.transport.open_url(location, retries=1)
        except StoreError:
            # The bucket's endpoint may be reachable by the server only: stream through it from now on.
            self.presign = False
            return self.transport.request("GET", self._path(oid))
        with self._count_lock:
            self.presigned_downloads += 1
        return direct

    def _read(self, oid: str) -> bytes:
        buffer = io.BytesIO()
        self._receive(oid, buffer, verify=False)  # get_bytes checks the hash (or, asked not to, does not)
        return buffer.getvalue()

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        self._receive(oid, out, verify=True)

    def _receive(self, oid: str, out: BinaryIO, verify: bool) -> None:
        """Write the object to ``out`` as it arrives, hashing it: IntegrityError if it does not
        hash to ``oid`` (with ``verify``). The server streams an object while hashing it and breaks the response
        off after the last byte when the stored copy is corrupt: when the reply breaks off
        after exactly the stored size (``X-Keel-Size``) of bytes that do not hash to ``oid``,
        that is IntegrityError too (a shorter body is a broken connection: StoreError)."""
        with self._open(check_oid(oid)) as response:
            expected = response.headers.get(SIZE_HEADER, "")
            hasher = new_hasher()
            received = 0
            try:
                for chunk in response.iter_chunks(CHUNK):
                    hasher.update(chunk)
                    received += len(chunk)
                    out.write(chunk)
            except StoreError:
                if expected.isdigit() and received == int(expected) and hasher.hexdigest() != oid:
                    raise self._corrupt(oid) from None
                raise
            if verify and hasher.hexdigest() != oid:
                raise self._corrupt(oid)

    def iter_oids(self) -> Iterator[str]:
        """Every object on the server, a page at a time (a site admin's token is needed)."""
        after: str | None = None
        while True:
            page = self.transport.call("GET", f"{API}/objects", params={"after": after, "limit": 10_000})
            oids = page.get("oids", []) if isinstance(page, dict) else []
            yield from oids
            after = page.get("next") if isinstance(page, dict) else None
            if not after or not oids:
                return

    # -- gc runs next to the server's store, not through it ----------------------------------
    def _gc_elsewhere(self, what: str) -> StoreError:
        return StoreError(
            f"the objects of the keel server {self.url} cannot {what} from a client",
            "garbage collection runs on the server's side: run 'keel gc' where the server's store is"
            " configured (its KEEL_URI), as a site admin",
        )

    def iter_objects(self) -> Iterator[ObjectInfo]:
        raise self._gc_elsewhere("be listed with their sizes and times")

    def delete_many(self, oids: Iterable[str]) -> int:
        raise self._gc_elsewhere("be deleted")

    def freshen(self, oid: str) -> None:
        """Nothing to do from here: the server freshens an object when a PUT finds it stored
        (its store's put path), and pins what a writer's ``missing`` check finds, so its gc
        keeps objects a push relies on (docs/gc.md)."""

    def freshened(self, oid: str) -> bool:
        return self.exists(oid)

    def freshen_many(self, oids: Iterable[str]) -> set[str]:
        return self._present(oids, pin=self.pin)  # a push: the server pins what it finds

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> HttpObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpObjectStore({self.url!r})"
