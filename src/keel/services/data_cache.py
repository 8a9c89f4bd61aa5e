"""The workspace's object cache: content by hash, with the state that makes it fast.

:class:`DataCache` is the local object store that data versioning reads and
writes (the workspace's own ``.keel/objects`` when that is a folder, else a
cache in ``.keel/data/cache`` in front of a remote store), together with:

- the state database (:class:`~keel.services.data_state.DataState`): the stat
  cache (:func:`trusted` says when an entry vouches for a file), where packed
  files sit, which objects data versioning owns, which were verified;
- parsed trees (:class:`~keel.objects.trees.TreeCache`, ``.keel/data/trees``);
- storing a large file (one read that hashes while the kernel copies, or a link)
  and a pack (:mod:`keel.objects.packs`).

A missing or corrupt object is fetched again through :meth:`DataCache.refetch`,
which the open repository (:class:`~keel.services.data.DataRepo`) connects to
its remotes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import blake3

from keel.core.data_tree import PACK_MAX_FILE, Tree, parse_tree
from keel.core.hashing import is_oid
from keel.errors import IntegrityError, NotFound
from keel.objects.local import LocalObjectStore
from keel.objects.trees import TreeCache
from keel.services import data_files as files_
from keel.services.data_files import FileStat, os_error
from keel.services.data_state import RACY_NS, DataState, StatRow

if TYPE_CHECKING:  # the add and checkout paths load these; status does not
    from concurrent.futures import Future

__all__ = ["FINE_RACY_NS", "DataCache", "racy_ns", "trusted"]

# RACY_NS (the state's rule) is for whole-second timestamps. Nanosecond ones (ext4, XFS, btrfs,
# tmpfs, APFS...) advance at least every kernel tick (at most 10 ms: HZ >= 100), so a change
# that keeps the same timestamp happens within 10 ms of it.
FINE_RACY_NS = 50_000_000
_EXEC_KEY = "x"  # the parsed-tree cache keeps a tree's executable entries under "x" + its oid


def racy_ns(mtime_ns: int) -> int:
    """How long after ``mtime_ns`` a file may still change without its mtime changing: a
    timestamp with a sub-second part comes from a file system with fine timestamps (the
    chance that a fine one is a whole second is one in a billion)."""
    return FINE_RACY_NS if mtime_ns % 1_000_000_000 else RACY_NS


class _CopiedAndHashed:
    """Counts the bytes of a large file both hashed and copied into the cache: the copy
    runs beside the hash and often ends seconds later (the disk writes slower than it
    reads), so the progress is whichever of the two is behind."""

    def __init__(self, counted: Callable[[int], None], tmp: str) -> None:
        self.counted = counted
        self.tmp = tmp
        self.done_hashing = 0
        self.reported = 0

    def hashed(self, n: int) -> None:
        self.done_hashing += n
        self.report()

    def report(self) -> None:
        try:
            copied = os.stat(self.tmp).st_size
        except OSError:
            copied = 0
        upto = min(self.done_hashing, copied)
        if upto > self.reported:
            self.counted(upto - self.reported)
            self.reported = upto


def _wait_for_copy(copying: Future[None], both: _CopiedAndHashed | None) -> None:
    """Wait for the copy of :meth:`DataRepo._store_copy`, counting its bytes as they land."""
    import concurrent.futures

    if both is None:
        copying.result()
        return
    while True:
        try:
            copying.result(timeout=0.1)
            break
        except concurrent.futures.TimeoutError:
            both.report()
    both.report()


class DataCache:
    """The object cache of a workspace (see the module docstring).

    Args:
        folder: the local object store's folder.
        data_dir: the workspace's ``.keel/data`` (state database, parsed trees).
    """

    def __init__(self, folder: Path, data_dir: Path) -> None:
        self.cache = LocalObjectStore(folder)
        self.state = DataState(data_dir / "state.db")
        self.trees = TreeCache(data_dir / "trees")

    def close(self) -> None:
        """Release the state file."""
        self.state.close()
        self.cache.close()

    def put_object(self, data: bytes) -> str:
        """Store bytes in the cache (atomically, read-only); their oid."""
        try:
            return self.cache.put_bytes(data)
        except OSError as exc:
            raise os_error(exc, "cannot write to the object cache") from exc

    def write_object(self, oid: str, parts: Sequence[bytes]) -> None:
        """Store the concatenation of ``parts``, whose hash is ``oid``, in the cache (temp
        file, read-only, rename) unless it is there."""
        try:
            from keel.objects.packs import write_parts

            write_parts(self.cache, oid, parts)
        except OSError as exc:
            raise os_error(exc, "cannot write to the object cache") from exc

    def has(self, oid: str) -> bool:
        """True if the cache holds object ``oid``."""
        return self.cache.exists(oid)

    def usable_locations(self, oids: set[str]) -> dict[str, tuple[str, int]]:
        """Known pack locations of ``oids`` whose pack is in the cache."""
        found = self.state.locations(oids)
        packs = {pack for pack, _ in found.values()}
        present = {p for p in packs if self.has(p)}
        return {oid: where for oid, where in found.items() if where[0] in present}

    def content_known(self, oids: set[str]) -> set[str]:
        """The subset of file ``oids`` whose bytes the cache holds (loose or packed)."""
        known = {o for o in oids if self.has(o)}
        rest = oids - known
        if rest:
            known |= set(self.usable_locations(rest))
        return known

    def load_tree(self, oid: str, where: str, fetch: bool = True) -> Tree:
        """The tree manifest ``oid`` (fetched from the default remote if the cache lacks it).

        A parsed tree is kept in ``.keel/data/trees/`` (:class:`~keel.objects.trees.TreeCache`),
        used only while the cache object is the very file it was parsed from."""
        st = self._object_stat(oid)
        if st is not None:
            tree = self.trees.get(oid, st)
            if tree is not None:
                marks = self.trees.get(_EXEC_KEY + oid, st)
                if marks is not None:
                    tree.executable = frozenset(e.path for e in marks.entries)
                return tree
        elif fetch:
            self.refetch([oid], quiet=True)
            st = self._object_stat(oid)
        try:
            data = self.cache.get_bytes(oid)
        except NotFound:
            raise NotFound(
                f"the version of {where} ({oid[:12]}) is not in the cache", "run 'keel data pull' to fetch it"
            ) from None
        except IntegrityError:
            if fetch and self.refetch([oid], quiet=True):
                return self.load_tree(oid, where, fetch=False)
            raise
        tree = parse_tree(data, f"tree {oid[:12]} of {where}")
        if st is not None:
            self._keep_parsed(oid, tree, st)
        return tree

    def _keep_parsed(self, oid: str, tree: Tree, st: os.stat_result) -> None:
        """Keep a parsed tree (:class:`~keel.objects.trees.TreeCache` keeps entries, not
        modes): the entries of its executable files are kept first as a companion,
        ``x<oid>``, and the tree itself only if that worked, so a kept tree without a
        companion is one without executable files."""
        if tree.executable:
            marks = Tree([e for e in tree.entries if e.path in tree.executable])
            self.trees.put(_EXEC_KEY + oid, marks, st)
            if not self.trees.has(_EXEC_KEY + oid):
                return
        self.trees.put(oid, tree, st)

    def _object_stat(self, oid: str) -> os.stat_result | None:
        if not is_oid(oid):
            return None
        try:
            st = os.stat(self.cache.path(oid))
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def forget_cached_trees(self, oids: Sequence[str]) -> None:
        """Drop the parsed copies of trees removed from the cache."""
        self.trees.forget([*oids, *(_EXEC_KEY + o for o in oids)])

    def cache_tree(self, oid: str, tree: Tree) -> None:
        """Keep the parsed copy of a tree just stored (unless one is kept)."""
        if not self.trees.has(oid):
            st = self._object_stat(oid)
            if st is not None:
                self._keep_parsed(oid, tree, st)

    def refetch(self, oids: Sequence[str], quiet: bool = False) -> bool:
        """Fetch ``oids`` again from the default remote (replacing corrupt copies);
        True if all arrived. With ``quiet``, a missing remote just returns False. A
        cache alone knows no remote: the open repository connects this to its own."""
        if quiet:
            return False
        raise NotFound(f"{len(oids)} object(s) are not in the cache", "run 'keel data pull' to fetch them")

    def record_objects(self, rows: Sequence[tuple[str, str]]) -> None:
        """Remember objects the data layer put in the cache (what gc may remove)."""
        if rows:
            self.state.add_objects(rows)

    # -- current content ------------------------------------------------------------------
    def current_oids(
        self, files: Sequence[FileStat], cached: dict[str, StatRow], rehash: bool = False
    ) -> dict[str, str]:
        """``{rel: oid}`` of ``files``: from the stat cache when it can be trusted, else
        hashed (and the cache updated)."""
        now = time.time_ns()
        out: dict[str, str] = {}
        fresh: list[tuple[str, int, int, int, str]] = []
        for f in files:
            row = cached.get(f.rel)
            if not rehash and trusted(row, f):
                out[f.rel] = row[3]  # type: ignore[index]
                continue
            if f.size < PACK_MAX_FILE:
                oid = blake3.blake3(files_.read_small(f)).hexdigest()
            else:
                oid, _ = files_.hash_large(f.path, f.rel, f)
            out[f.rel] = oid
            fresh.append((f.rel, f.ino, f.size, f.mtime, oid))
        if fresh:
            self.state.save_stats(fresh, now)
        return out

    def store_large(self, f: FileStat, mode: str, counted: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """Hash a large file and put it in the cache as a loose object; ``(oid, stored)``.

        With a link mode the cache object shares the file's data (a hard link makes both
        read-only, so an in-place edit cannot corrupt the cache); else it is copied.
        ``counted(n)`` is told of the bytes hashed, 16 MiB at a time.
        """
        mode = files_.effective_mode(mode, self.cache.tmp_folder())
        if mode == "copy":
            return self._store_copy(f, counted)
        oid, st = files_.hash_large(f.path, f.rel, f, counted)
        if self.has(oid):
            return oid, False
        tmp = files_.tmp_name(self.cache.tmp_folder())
        try:
            used = files_.link_into(f.path, tmp, mode)
            os.chmod(tmp, files_.READ_ONLY)
            after = os.stat(f.path)
            if (after.st_ino, after.st_size, after.st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
                raise files_.changed_while_hashing(f.rel)
            if used == "copy":  # the file may have changed between the hash and the copy
                copied, _ = files_.hash_large(tmp, f.rel)
                if copied != oid:
                    raise files_.changed_while_hashing(f.rel)
            self._commit_tmp(tmp, oid)
        except OSError as exc:
            raise os_error(exc, f"cannot store {f.rel} in the cache") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return oid, True

    def _store_copy(self, f: FileStat, counted: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """Copy a large file into the cache. The kernel copies while this thread hashes the
        source (one read of it, both at once); the file's inode, size and mtime must be the
        same before and after both, else nothing is stored. A file modified within the racy
        window (its mtime could hide a change) is copied first and the copy hashed."""
        import concurrent.futures  # the large-file path only: status and checkout never load it

        tmp = files_.tmp_name(self.cache.tmp_folder())
        try:
            if f.mtime + racy_ns(f.mtime) < time.time_ns():
                both = None if counted is None else _CopiedAndHashed(counted, tmp)
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    copying = pool.submit(files_.copy_file, f.path, tmp)
                    try:
                        oid, _ = files_.hash_large(f.path, f.rel, f, None if both is None else both.hashed)
                    finally:
                        _wait_for_copy(copying, both)
                copied = os.stat(tmp).st_size
            else:
                files_.copy_file(f.path, tmp)
                oid, st = files_.hash_large(tmp, f.rel, None, counted)  # the hash of what was stored
                copied = st.st_size
            after = os.stat(f.path)
            if (after.st_ino, after.st_size, after.st_mtime_ns) != (f.ino, f.size, f.mtime) or copied != f.size:
                raise files_.changed_while_hashing(f.rel)
            if self.has(oid):
                return oid, False
            self._commit_tmp(tmp, oid)
            return oid, True
        except OSError as exc:
            raise os_error(exc, f"cannot store {f.rel} in the cache") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _commit_tmp(self, tmp: str, oid: str) -> None:
        final = self.cache.commit_file(tmp, oid)
        st = os.stat(final)
        self.state.set_checked([(oid, st.st_ino, st.st_size, st.st_mtime_ns)])


def trusted(row: StatRow | None, f: FileStat) -> bool:
    """True if stat cache ``row`` still describes file ``f`` (same inode, size and mtime,
    and recorded after the file's last change by more than its timestamp step, :func:`racy_ns`)."""
    if row is None or row[0] != f.ino or row[1] != f.size or row[2] != f.mtime:
        return False
    mtime = f.mtime
    return mtime + (FINE_RACY_NS if mtime % 1_000_000_000 else RACY_NS) < row[4]
