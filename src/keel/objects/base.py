"""The object-store interface and the behaviour every backend shares."""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from keel.core.hashing import hash_bytes, is_oid, new_hasher
from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.fileio import atomic_write

__all__ = ["CHUNK", "Capabilities", "ObjectInfo", "ObjectStore", "check_oid"]

CHUNK = 1 << 20  # bytes read per step when streaming a file


@dataclass(frozen=True)
class Capabilities:
    """What a store can do beyond the common interface, so callers ask instead of
    checking its class.

    Attributes:
        local_path: objects are files on this machine: :meth:`ObjectStore.path` names
            them (read, link or copy them in place) and :meth:`ObjectStore.sweep_tmp`
            removes what killed writers left.
        link_in: a file on this machine (in :meth:`ObjectStore.tmp_folder`) can become an
            object by renaming it in (:meth:`ObjectStore.commit_file`): no copy.
        multipart_put: large files go up in parts; a killed upload leaves parts behind
            that :meth:`ObjectStore.abort_stale_uploads` removes.
        presign: :meth:`ObjectStore.presigned_url` hands out a short-lived URL that reads
            an object straight from the store.
        transfer_jobs: parallel transfers that suit it (a disk wants few, S3 many).
    """

    local_path: bool = False
    link_in: bool = False
    multipart_put: bool = False
    presign: bool = False
    transfer_jobs: int = 4


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object as a listing sees it: what garbage collection needs to decide.

    Attributes:
        oid: its id.
        size: its stored size in bytes.
        mtime: when it was last written or freshened (:meth:`ObjectStore.freshen`), in
            seconds since the epoch: an object younger than gc's grace period is kept.
    """

    oid: str
    size: int
    mtime: float


def check_oid(oid: str) -> str:
    """Return ``oid`` if it is a full hex BLAKE3 id, else raise InvalidInput."""
    if not isinstance(oid, str) or not is_oid(oid):
        raise InvalidInput(f"invalid object id {oid!r}", "object ids are 64 lowercase hex digits")
    return oid


class ObjectStore(abc.ABC):
    """An immutable, content-addressed blob store.

    Subclasses implement the five primitives (``_write``, ``_read``,
    ``exists``, ``iter_oids``, ``describe``); hashing, verification and file
    streaming are shared here so every backend behaves the same.
    """

    url: str = ""
    capabilities: Capabilities = Capabilities()

    # -- primitives ------------------------------------------------------
    @abc.abstractmethod
    def _write(self, oid: str, data: bytes) -> None:
        """Store ``data`` under ``oid`` atomically (a no-op if present)."""

    @abc.abstractmethod
    def _read(self, oid: str) -> bytes:
        """Return the stored bytes of ``oid``; raise NotFound if absent."""

    @abc.abstractmethod
    def exists(self, oid: str) -> bool:
        """True if ``oid`` is stored."""

    @abc.abstractmethod
    def iter_oids(self) -> Iterator[str]:
        """Every stored object id (any order)."""

    @abc.abstractmethod
    def describe(self, oid: str) -> str:
        """Where ``oid`` lives, for messages (a path or URL)."""

    # -- listing, freshening and deleting (garbage collection, erasure) --------------
    def iter_objects(self) -> Iterator[ObjectInfo]:
        """Every stored object with its size and mtime (any order; never temporary files)."""
        raise self._cannot("list its objects with their sizes and times")

    def delete_many(self, oids: Iterable[str]) -> int:
        """Remove those of ``oids`` that are stored; the bytes freed. Absent ones are
        skipped (idempotent). Only callers that know nothing references them may call it
        (erasure, purge, gc): objects are shared by content."""
        raise self._cannot("delete objects")

    def freshen(self, oid: str) -> None:
        """Make the stored object ``oid`` young (its mtime now), so gc's grace period
        protects it: called when a put finds the object already stored, since the writer
        is about to record a reference to it that a running gc has not seen. An absent
        object is not an error (the caller stores it)."""
        raise self._cannot("freshen objects")

    def freshened(self, oid: str) -> bool:
        """True if ``oid`` is stored and now young (:meth:`freshen`); False if the caller
        must store it. What every put path asks instead of :meth:`exists`: an object a
        concurrent gc removes between the two steps is reported absent, never present."""
        if not self.exists(oid):
            return False
        self.freshen(oid)
        return self.exists(oid)

    def freshen_many(self, oids: Iterable[str]) -> set[str]:
        """The subset of ``oids`` that is stored, each now young enough for gc's grace period:
        what a writer asks instead of :meth:`exists_many` before it skips storing objects it is
        about to reference (a push, a KB add)."""
        return {oid for oid in set(oids) if self.freshened(oid)}

    def prune(self, infos: Iterable[ObjectInfo], fresh_after: float) -> list[ObjectInfo]:
        """Delete the listed objects unless they were written or freshened after
        ``fresh_after`` (seconds since the epoch) since they were listed; those deleted.

        gc's last step: a writer that stored or freshened one of them meanwhile wins.
        This default deletes them all (stores whose objects have no time of their own);
        stores with one re-check it as close to the delete as they can."""
        chosen = list(infos)
        self.delete_many(info.oid for info in chosen)
        return chosen

    # -- shared behaviour ---------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its oid. Identical content is stored once (and an object
        found stored is freshened, see :meth:`freshen`)."""
        oid = hash_bytes(data)
        if not self.freshened(oid):
            self._write(oid, data)
        return oid

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """Store a file's content (streamed); return ``(oid, size)``."""
        hasher = new_hasher()
        size = 0
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                hasher.update(chunk)
                size += len(chunk)
        oid = hasher.hexdigest()
        if not self.freshened(oid):
            self._write_file(oid, Path(path))
        return oid, size

    def _write_file(self, oid: str, path: Path) -> None:
        """Store a file whose oid is known; backends override to stream."""
        self._write(oid, path.read_bytes())

    def get_bytes(self, oid: str, verify: bool = True) -> bytes:
        """The content of ``oid``; with ``verify`` its hash is checked."""
        data = self._read(check_oid(oid))
        if verify and hash_bytes(data) != oid:
            raise self._corrupt(oid)
        return data

    def _corrupt(self, oid: str) -> IntegrityError:
        return IntegrityError(
            f"object {oid} is corrupt: its content no longer matches its hash ({self.describe(oid)})",
            "restore it from a remote or a backup; 'keel verify' lists every corrupt object",
        )

    def _copy_verified(self, oid: str, chunks: Iterable[bytes], out: BinaryIO) -> None:
        """Write ``chunks`` (the stored content of ``oid``) to ``out``, hashing as it goes;
        raise IntegrityError at the end if they do not hash to ``oid``."""
        hasher = new_hasher()
        for chunk in chunks:
            hasher.update(chunk)
            out.write(chunk)
        if hasher.hexdigest() != oid:
            raise self._corrupt(oid)

    def verify(self, oid: str) -> None:
        """Raise IntegrityError if ``oid`` is corrupt, NotFound if missing (streams; no
        whole object in memory)."""
        with open(os.devnull, "wb") as sink:
            self._copy_to(oid, sink)

    def get_file(self, oid: str, dest: str | os.PathLike[str]) -> None:
        """Write the content of ``oid`` to ``dest`` atomically, verifying it.

        The bytes go to a new temporary file beside ``dest`` (:func:`keel.fileio.atomic_write`:
        a unique name opened with ``O_EXCL``, so a file or symlink planted at a guessable
        name is never written through), then it is renamed over ``dest``; a corrupt object
        leaves ``dest`` as it was. Not fsynced: callers that keep the file (a cache) check
        its hash when they read it."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dest, lambda out: self._copy_to(oid, out), fsync=False)

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        out.write(self.get_bytes(oid))

    def open_stream(self, oid: str, size: int = CHUNK) -> tuple[int | None, Iterator[bytes]]:
        """``(stored size or None, chunks)`` of ``oid``, unverified (the reader hashes them);
        NotFound at once if it is absent. Stores that can stream override this; the
        default reads the whole object."""
        data = self.get_bytes(oid, verify=False)
        return len(data), iter((data,))

    # -- what some stores can do (see Capabilities) ------------------------------------
    def _cannot(self, what: str) -> InvalidInput:
        return InvalidInput(
            f"the object store {self.url or type(self).__name__} cannot {what}",
            "use a local folder as the object store for this",
        )

    def path(self, oid: str) -> Path:
        """The local file holding ``oid`` (``capabilities.local_path``)."""
        raise self._cannot("name a local file for an object")

    def tmp_folder(self) -> Path:
        """Where files to :meth:`commit_file` are written (``capabilities.link_in``)."""
        raise self._cannot("take files in by renaming them")

    def commit_file(self, tmp: str | os.PathLike[str], oid: str) -> Path:
        """Make ``tmp`` (a file in :meth:`tmp_folder` whose content hashes to ``oid``) the
        object ``oid``, read-only, by renaming it in (``capabilities.link_in``); its path."""
        raise self._cannot("take files in by renaming them")

    def presigned_url(self, oid: str, expires_in: int = 300, filename: str | None = None) -> str:
        """A short-lived URL reading ``oid`` straight from the store (``capabilities.presign``)."""
        raise self._cannot("presign URLs")

    def abort_stale_uploads(self, older_than: float) -> list[str]:
        """Abort multipart uploads older than ``older_than`` seconds (``capabilities.multipart_put``);
        the keys aborted. Stores without them have none."""
        return []

    def sweep_tmp(self, older_than: float) -> tuple[int, int]:
        """Remove temporary files older than ``older_than`` seconds left by killed writers
        (``capabilities.local_path``); ``(files, bytes)``. Other stores keep none."""
        return 0, 0

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        """The subset of ``oids`` that is stored."""
        return {oid for oid in oids if self.exists(oid)}

    def verify_all(self) -> Iterator[tuple[str, str]]:
        """Yield ``(oid, problem)`` for every corrupt or unreadable object."""
        for oid in self.iter_oids():
            try:
                self.verify(oid)
            except (IntegrityError, NotFound) as exc:
                yield oid, exc.message

    def ping(self, timeout: float = 2.0) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Raise :class:`~keel.errors.Unavailable` unless the store can be used now (the
        server's health check; a cheap call, at most about ``timeout`` seconds). The
        default (memory, a keel server's objects) checks nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release resources (connections); the default has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
