"""Packs: many small files' bytes stored as one object, written and read in place.

A folder version stores its small files (under
:data:`~keel.core.data_tree.PACK_MAX_FILE`) concatenated into pack objects of
about :data:`~keel.core.data_tree.PACK_TARGET` bytes; its tree
(:mod:`keel.core.data_tree`) says which pack and offset hold each file. This
module writes packs into a store that takes files in
(``capabilities.link_in``) and reads them from one whose objects are local
files (``capabilities.local_path``):

- :class:`PackWriter` collects files' bytes, skips content already stored (a
  ``locate`` callback answers where), names the pack by its hash (4 MiB at a
  time, by BLAKE3's threads) and writes it with ``writev`` on one background
  thread while the next files are read;
- :func:`write_parts` stores the concatenation of byte strings as one object;
- :func:`mapped` maps a pack file into memory: a file's bytes are a slice of
  it, hashed and written out without a read call or a copy.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import blake3

from keel.core.data_tree import PACK_TARGET
from keel.objects.base import ObjectStore

__all__ = ["PackWriter", "Slot", "mapped", "write_parts"]

_IOV_MAX = 1024  # buffers per writev
_PIECE = 4 << 20  # bytes of a pack hashed in one call


class Slot(Protocol):
    """A file being packed: its content's oid, and where the writer put it."""

    oid: str
    pack: str
    offset: int


Locate = Callable[[set[str]], dict[str, tuple[str, int]]]  # oids -> {oid: (pack, offset)} stored already


def write_parts(store: ObjectStore, oid: str, parts: Sequence[bytes]) -> None:
    """Store the concatenation of ``parts`` (whose hash is ``oid``) as object ``oid``
    unless it is there (then it is freshened, so a running gc keeps it): a temporary file in
    the store, written with ``writev``, renamed in."""
    if store.freshened(oid):
        return
    tmp = str(store.tmp_folder() / uuid.uuid4().hex)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for i in range(0, len(parts), _IOV_MAX):
                batch = parts[i : i + _IOV_MAX]
                done = os.writev(fd, batch)
                if done < sum(len(p) for p in batch):  # a short write: finish it piece by piece
                    view = memoryview(b"".join(batch))[done:]
                    while view:
                        view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        store.commit_file(tmp, oid)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class PackWriter:
    """Collects small files' bytes and writes them as pack objects of ~PACK_TARGET bytes.

    Content that ``known`` or ``locate`` places in a stored pack is not stored again.
    A pack is named (hashed) at once and written by one background thread (file writes
    release the GIL) while the caller reads the next files; at most one write is in
    flight. :meth:`close` waits for it and raises its error, if any.

    Args:
        store: where packs go (``capabilities.link_in``).
        locate: where stored packs already hold some oids (called once per pack).
        known: ``{oid: (pack, offset)}`` known to be stored (say, the previous version's).
        write: how a pack is stored (default :func:`write_parts` into ``store``).
    """

    def __init__(
        self,
        store: ObjectStore,
        locate: Locate,
        known: dict[str, tuple[str, int]] | None = None,
        write: Callable[[str, list[bytes]], None] | None = None,
    ) -> None:
        self.store = store
        self.locate = locate
        self.known: dict[str, tuple[str, int]] = dict(known or {})
        self.write = write or (lambda oid, parts: write_parts(store, oid, parts))
        self.pending: list[tuple[Slot, bytes]] = []
        self.pending_bytes = 0
        self.new_packs: list[str] = []
        self.new_locations: list[tuple[str, str, int, int]] = []  # (oid, pack, offset, size)
        self._pool: ThreadPoolExecutor | None = None
        self._writing: Future[None] | None = None

    def add(self, item: Slot, data: bytes) -> None:
        """Place ``item`` (whose content is ``data``): in a known pack, or in the next one."""
        where = self.known.get(item.oid)
        if where is not None:
            item.pack, item.offset = where
            return
        self.pending.append((item, data))
        self.pending_bytes += len(data)
        if self.pending_bytes >= PACK_TARGET:
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one pack (content stored elsewhere meanwhile is reused)."""
        if not self.pending:
            return
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        found = self.locate({item.oid for item, _ in pending})
        parts: list[bytes] = []
        offset = 0
        mine: dict[str, tuple[int, int]] = {}  # oid -> (offset, size) in the new pack
        packed: list[Slot] = []
        for item, data in pending:
            oid = item.oid
            where = found.get(oid)
            if where is not None:
                item.pack, item.offset = where
                continue
            packed.append(item)
            at = mine.get(oid)
            if at is not None:
                item.offset = at[0]
                continue
            mine[oid] = (offset, len(data))
            item.offset = offset
            parts.append(data)
            offset += len(data)
        if parts:
            pack = _hash_of(parts)
            self.new_packs.append(pack)
            for item in packed:
                item.pack = pack
            known = self.known
            for oid, (off, _) in mine.items():
                known[oid] = (pack, off)
            self.new_locations += [(oid, pack, off, size) for oid, (off, size) in mine.items()]
            self._wait()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1)
            self._writing = self._pool.submit(self.write, pack, parts)
        self.known.update(found)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def close(self) -> None:
        """Wait for the last pack write (raising its error)."""
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def _hash_of(parts: list[bytes]) -> str:
    """The BLAKE3 hex digest of the concatenation of ``parts``: copied into one reused buffer of
    :data:`_PIECE` bytes that is hashed whenever it is full (by BLAKE3's threads), instead of
    one call per small file, and no second copy of the whole pack in memory."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    buffer = memoryview(bytearray(_PIECE))
    filled = 0
    for part in parts:
        size = len(part)
        if filled + size > _PIECE:
            hasher.update(buffer[:filled])
            filled = 0
        if size > _PIECE:
            hasher.update(part)
            continue
        buffer[filled : filled + size] = part
        filled += size
    if filled:
        hasher.update(buffer[:filled])
    return hasher.hexdigest()


@contextlib.contextmanager
def mapped(path: str | os.PathLike[str]) -> Iterator[memoryview]:
    """The bytes of the file at ``path`` as a read-only memoryview of a memory map (an empty
    view for an empty file). Slices of it must be released (or dropped) before it closes."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:  # mmap refuses empty files
            yield memoryview(b"")
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                yield view
            finally:
                view.release()
