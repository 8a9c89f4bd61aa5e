"""Parsed trees kept beside a local object store, so a folder version is parsed once.

A tree object (:mod:`keel.core.data_tree`) of 20,000 files is ~2 MB of text
whose parsing and path checks take a tenth of a second. :class:`TreeCache`
keeps each parsed tree as a ``marshal`` file of columns in its folder, keyed by
the tree's oid and the identity of the object file it was parsed from (inode,
size, mtime): a replaced or damaged object is never answered from the cache, it
is read and checked again. Everything here can be rebuilt, so writes are best
effort and never fsynced.
"""

from __future__ import annotations

import contextlib
import marshal
import os
from collections.abc import Sequence
from pathlib import Path

from keel.core.data_tree import Tree, TreeEntry
from keel.fileio import atomic_write_bytes

__all__ = ["TreeCache"]

_VERSION = 2  # of the files written here (2: paths checked when parsed)


class TreeCache:
    """Parsed trees in ``folder``, one file per tree oid.

    Args:
        folder: where the files go (created when the first is written).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, oid: str) -> str:
        """The file of tree ``oid``."""
        return f"{self.folder}/{oid}"

    def has(self, oid: str) -> bool:
        """True if a parsed copy of ``oid`` is kept (valid or not)."""
        return os.path.exists(self.path(oid))

    def get(self, oid: str, source: os.stat_result) -> Tree | None:
        """The parsed tree ``oid``, if it was parsed from the object file whose stat is ``source``."""
        try:
            with open(self.path(oid), "rb") as fh:
                value = marshal.loads(fh.read())  # (marshal.load reads a file in tiny steps)
            version, key, ident, paths, oids, sizes, packs, offsets = value
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if version != _VERSION or key != oid or ident != (source.st_ino, source.st_size, source.st_mtime_ns):
            return None
        new = tuple.__new__  # TreeEntry(...) without its Python-level __new__
        try:
            return Tree([new(TreeEntry, row) for row in zip(paths, oids, sizes, packs, offsets, strict=True)])
        except (TypeError, ValueError):
            return None

    def put(self, oid: str, tree: Tree, source: os.stat_result) -> None:
        """Keep ``tree`` (parsed from, or just written as, the object file ``source``); best effort."""
        entries = tree.entries
        value = (
            _VERSION,
            oid,
            (source.st_ino, source.st_size, source.st_mtime_ns),
            [e.path for e in entries],
            [e.oid for e in entries],
            [e.size for e in entries],
            [e.pack for e in entries],
            [e.offset for e in entries],
        )
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path(oid), marshal.dumps(value), fsync=False)  # a cache: rebuilt if lost

    def forget(self, oids: Sequence[str]) -> None:
        """Drop the parsed copies of ``oids`` (trees removed from the store)."""
        for oid in oids:
            with contextlib.suppress(OSError):
                os.unlink(self.path(oid))
