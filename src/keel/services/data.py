"""Data versioning: track files and folders next to code, restore any version.

``keel data add PATH`` hashes the data (BLAKE3; a stat cache skips files that
did not change), stores the bytes in the workspace's content-addressed object
store (small files packed, see :mod:`keel.core.data_tree`), writes the pointer
file ``PATH.keel`` for git and adds ``PATH`` to the ``.gitignore`` beside it,
and registers the dataset version in the metadata store. The other
operations live beside this module:

- ``data_checkout``: make the workspace match the pointer files (links, no copies, when it can);
- ``data_remote``: push, fetch and pull objects to and from remotes (local folders, S3);
- ``data_maint``: status, diff, gc and verify.

:class:`DataRepo` is the open workspace they share: its root, config, object
cache and state (``.keel/data/state.db``). Opening one never touches the
metadata database; only ``add`` (to register versions), ``log`` and ``gc`` do.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

from keel.core.data_pointer import POINTER_SUFFIX, Pointer, format_pointer, parse_pointer
from keel.core.data_tree import (
    PACK_MAX_FILE,
    PACK_TARGET,
    Tree,
    TreeEntry,
    check_rel_path,
    check_tree_paths,
    parse_tree,
)
from keel.core.hashing import is_oid
from keel.core.progress import Meter, Progress, meter
from keel.errors import Conflict, IntegrityError, InvalidInput, KeelError, NotFound
from keel.fileio import atomic_write_bytes
from keel.objects.local import LocalObjectStore
from keel.services import data_files as files_
from keel.services.data_config import DIRNAME, DataConfig, check_link_mode, find_root
from keel.services.data_files import FileStat, os_error
from keel.services.data_state import RACY_NS, DataState, StatRow
from keel.services.workspace_config import read_workspace_config

__all__ = ["AddResult", "DataRepo", "Tracked", "add", "open_repo"]

_COUNT_EVERY = 1 << 20  # bytes of small files read between two progress counts
_TREE_CACHE_VERSION = 2  # of the parsed trees kept in .keel/data/trees/ (2: paths checked when parsed)
_SYMLINK_HINT = (
    "keel does not follow or store symlinks: replace the link with a copy of its target, "
    "or track the target where it lives"
)


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
    if both is None:
        copying.result()
        return
    while True:
        try:
            copying.result(timeout=0.1)
            break
        except FuturesTimeout:
            both.report()
    both.report()


@dataclass(frozen=True)
class Tracked:
    """A pointer file and the data it stands for (paths relative to the workspace)."""

    pointer_path: str
    data_path: str
    pointer: Pointer


@dataclass(frozen=True)
class AddResult:
    """What ``keel data add`` did for one path."""

    path: str
    pointer_path: str
    kind: str
    oid: str
    size: int
    files: int
    changed: bool  # the pointer file was written (new or different)
    hashed: int  # files read and hashed (the rest came from the stat cache)
    stored: int  # objects written to the cache

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass(slots=True)
class _Located:
    """A file of a directory being added: its oid and where its bytes are stored."""

    f: FileStat
    oid: str = ""
    pack: str = ""
    offset: int = 0


@dataclass
class _PackWriter:
    """Collects small files' bytes and writes them as pack objects of ~PACK_TARGET bytes.

    A pack is hashed (named) at once and written to the cache by one background thread
    (file writes release the GIL) while the next files are read; at most one write is
    in flight. :meth:`close` waits for it and raises its error, if any."""

    repo: DataRepo
    known: dict[str, tuple[str, int]]  # oid -> (pack, offset) already stored
    pending: list[tuple[_Located, bytes]] = field(default_factory=list)
    pending_bytes: int = 0
    new_packs: list[str] = field(default_factory=list)
    new_locations: list[tuple[str, str, int, int]] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = None
    _writing: Future[None] | None = None

    def add(self, item: _Located, data: bytes) -> None:
        where = self.known.get(item.oid)
        if where is not None:
            item.pack, item.offset = where
            return
        self.pending.append((item, data))
        self.pending_bytes += len(data)
        if self.pending_bytes >= PACK_TARGET:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        # Content already packed elsewhere (another folder, an earlier version) is reused.
        found = self.repo.usable_locations({item.oid for item, _ in self.pending})
        parts: list[bytes] = []
        offset = 0
        mine: dict[str, tuple[int, int]] = {}  # oid -> (offset, size) in the new pack
        packed: list[_Located] = []
        for item, data in self.pending:
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
            # Hashed and written part by part: no second 32 MiB copy of the pack in memory.
            hasher = blake3.blake3()
            for part in parts:
                hasher.update(part)
            pack = hasher.hexdigest()
            self.new_packs.append(pack)
            for item in packed:
                item.pack = pack
            known = self.known
            for oid, (off, _) in mine.items():
                known[oid] = (pack, off)
            self.new_locations += [(oid, pack, off, size) for oid, (off, size) in mine.items()]
            self.pending.clear()
            self._wait()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1)
            self._writing = self._pool.submit(self.repo.write_object, pack, parts)
        for oid, where in found.items():
            self.known[oid] = where
        self.pending.clear()
        self.pending_bytes = 0

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


class DataRepo:
    """An open workspace for data versioning (see the module docstring).

    Args:
        root: the workspace folder (holding ``.keel/``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keel_dir = root / DIRNAME
        self.data_dir = self.keel_dir / "data"
        self.tmp = self.data_dir / "tmp"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            ignore = self.data_dir / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# keel's local data state (stat cache, object index): never commit it\n*\n")
        except OSError as exc:
            raise os_error(exc, f"cannot create {self.data_dir}") from exc
        settings = read_workspace_config(root)
        data = settings.data
        self.config: DataConfig = DataConfig(data.link, data.default_remote, dict(data.remotes))
        self.cache = LocalObjectStore(self._cache_dir(settings.store.objects))
        self.state = DataState(self.data_dir / "state.db")
        self._lock_fh: Any = None

    def _cache_dir(self, objects: str) -> Path:
        """The local object store: the workspace's own when it is a local folder."""
        if objects.startswith("file://"):
            objects = objects[len("file://") :]
        if "://" in objects:
            return self.data_dir / "cache"  # the shared store is remote: keep a local cache
        return (self.keel_dir / objects).resolve()

    def close(self) -> None:
        """Release the state file and lock."""
        self.state.close()
        self.cache.close()

    def __enter__(self) -> DataRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the workspace's data lock (one add/checkout/fetch/gc at a time)."""
        if self._lock_fh is not None:
            yield
            return
        fh = open(self.data_dir / "lock", "a+")  # noqa: SIM115 - closed below
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_fh = fh
            yield
        finally:
            self._lock_fh = None
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    # -- paths ---------------------------------------------------------------------
    def rel(self, path: str | os.PathLike[str]) -> str:
        """The workspace-relative ``/`` path of ``path`` (relative to the current folder).

        Raises:
            InvalidInput: the path is outside the workspace, the workspace itself, or in ``.keel/``/``.git/``.
        """
        text = os.fspath(path)
        if "\x00" in text:
            raise InvalidInput(f"{text!r} contains a NUL character", "give the path of a file or folder")
        absolute = os.path.abspath(text)
        parent, name = os.path.split(absolute)
        real = os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(parent)
        root = str(self.root)
        if real == root:
            raise InvalidInput(
                f"{text} is the whole workspace", "track folders or files inside it, e.g. 'keel data add data/'"
            )
        if not real.startswith(root + os.sep):
            raise InvalidInput(
                f"{text} is outside the repository ({root})",
                "keel tracks data inside the workspace: move or copy it in",
            )
        rel = real[len(root) + 1 :].replace(os.sep, "/")
        top = rel.split("/", 1)[0]
        if top in (DIRNAME, ".git"):
            raise InvalidInput(f"{text} is inside {top}/", "keel cannot track its own or git's files")
        return rel

    def abs(self, rel: str) -> str:
        """The absolute path of workspace path ``rel``."""
        return str(self.root / rel)

    # -- pointers ----------------------------------------------------------------------
    def read_pointer(self, pointer_rel: str) -> Pointer:
        """Parse a pointer file of the workspace."""
        path = self.root / pointer_rel
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NotFound(f"no pointer file {pointer_rel}", "'keel data add PATH' creates it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {pointer_rel}: {exc}", "restore it from git") from None
        return parse_pointer(text, pointer_rel)

    def tracked(self, pointer_rel: str) -> Tracked:
        """The :class:`Tracked` of a pointer file.

        Raises:
            InvalidInput: the pointer names data inside ``.keel/`` or a ``.git`` folder
                (a pointer from someone else's repository must not make checkout write there).
        """
        pointer = self.read_pointer(pointer_rel)
        data_path = posixpath.join(posixpath.dirname(pointer_rel), pointer.path)
        parts = data_path.split("/")
        if parts[0] == DIRNAME or ".git" in parts:
            raise InvalidInput(
                f"{pointer_rel} names data inside {'.keel' if parts[0] == DIRNAME else '.git'}/ ({data_path})",
                "keel never writes its data into its own or git's folders: remove or fix the pointer file",
            )
        return Tracked(pointer_rel, data_path, pointer)

    def tracking_ancestor(self, rel: str) -> str | None:
        """The pointer of a tracked folder that contains ``rel``, if any."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            candidate = folder + POINTER_SUFFIX
            if os.path.isfile(self.abs(candidate)):
                try:
                    pointer = self.read_pointer(candidate)
                except KeelError:
                    continue
                if pointer.is_dir and pointer.path == parts[i - 1]:
                    return candidate
        return None

    def all_pointer_files(self) -> list[str]:
        """Every pointer file in the working tree (git's view, or a walk outside git)."""
        from keel.services.data_git import pointer_files

        listed = pointer_files(self.root)
        if listed is not None:
            return [p for p in listed if os.path.isfile(self.abs(p))]
        found: list[str] = []
        stack = [(str(self.root), "")]
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                items = list(entries)
            names = {e.name for e in items}
            for e in items:
                rel = prefix + e.name
                if e.is_dir(follow_symlinks=False):
                    if not prefix and e.name in (DIRNAME, ".git"):
                        continue
                    if e.name + POINTER_SUFFIX not in names:  # do not walk into tracked data
                        stack.append((e.path, rel + "/"))
                elif e.name.endswith(POINTER_SUFFIX) and e.is_file(follow_symlinks=False):
                    found.append(rel)
        return sorted(found)

    def select(self, paths: Sequence[str | os.PathLike[str]] | None) -> list[Tracked]:
        """The tracked data named by ``paths`` (data paths, pointer files, or paths inside a
        tracked folder); every tracked path when ``paths`` is empty."""
        if not paths:
            tracked = [self.tracked(p) for p in self.all_pointer_files()]
            return tracked + self.imported_dvc({t.data_path for t in tracked})
        chosen: dict[str, Tracked] = {}
        dvc: list[Tracked] | None = None
        for path in paths:
            rel = self.rel(path)
            if rel.endswith(POINTER_SUFFIX) and os.path.isfile(self.abs(rel)):
                pointer_rel = rel
            elif os.path.isfile(self.abs(rel + POINTER_SUFFIX)):
                pointer_rel = rel + POINTER_SUFFIX
            else:
                ancestor = self.tracking_ancestor(rel)
                if ancestor is None:
                    dvc = self.imported_dvc(set()) if dvc is None else dvc
                    data_rel = rel[: -len(".dvc")] if rel.endswith(".dvc") else rel
                    matches = [t for t in dvc if data_rel == t.data_path or data_rel.startswith(t.data_path + "/")]
                    if not matches:
                        raise NotFound(
                            f"{path} is not tracked (no {rel}{POINTER_SUFFIX})", "track it: keel data add PATH"
                        )
                    chosen.setdefault(matches[0].pointer_path, matches[0])
                    continue
                pointer_rel = ancestor
            chosen.setdefault(pointer_rel, self.tracked(pointer_rel))
        return list(chosen.values())

    def imported_dvc(self, exclude: set[str]) -> list[Tracked]:
        """Data that only DVC files track (a commit from before ``keel import dvc``), resolved
        through the import ledger; ``exclude``: data paths a pointer file tracks. Empty in a
        workspace that is not a DVC repository."""
        if not (self.root / ".dvc").is_dir():
            return []
        from keel.services.importers.dvc_files import dvc_tracked

        return dvc_tracked(self, exclude)

    def write_pointer(self, pointer_rel: str, pointer: Pointer) -> bool:
        """Write a pointer file (atomically) unless it already says the same; True if written."""
        path = self.root / pointer_rel
        text = format_pointer(pointer)
        try:
            if path.read_text() == text:
                return False
        except (FileNotFoundError, UnicodeDecodeError):
            pass
        files_.write_text_atomic(path, text)
        return True

    # -- objects -----------------------------------------------------------------------
    def put_object(self, data: bytes) -> str:
        """Store bytes in the cache (atomically, read-only); their oid."""
        try:
            return self.cache.put_bytes(data)
        except OSError as exc:
            raise os_error(exc, "cannot write to the object cache") from exc

    def write_object(self, oid: str, parts: Sequence[bytes]) -> None:
        """Store the concatenation of ``parts``, whose hash is ``oid``, in the cache (temp
        file, read-only, rename) unless it is there."""
        if self.has(oid):
            return
        tmp = files_.tmp_name(self.cache.root / "tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                for i in range(0, len(parts), 1024):  # IOV_MAX buffers per writev
                    batch = parts[i : i + 1024]
                    done = os.writev(fd, batch)
                    if done < sum(len(p) for p in batch):  # a short write: finish it piece by piece
                        view = memoryview(b"".join(batch))[done:]
                        while view:
                            view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.chmod(tmp, files_.READ_ONLY)
            final = self.cache.path(oid)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
        except OSError as exc:
            raise os_error(exc, "cannot write to the object cache") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

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

        A parsed tree is kept in ``.keel/data/trees/<oid>`` (marshal: columns, not text),
        used only while the cache object is the very file it was parsed from (same inode,
        size and mtime), so a replaced or damaged object is read and checked again."""
        st = self._object_stat(oid)
        if st is not None:
            tree = self._cached_tree(oid, st)
            if tree is not None:
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
            self._cache_tree(oid, tree, st)
        return tree

    def _object_stat(self, oid: str) -> os.stat_result | None:
        if not is_oid(oid):
            return None
        try:
            st = os.stat(self.cache.path(oid))
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    def _tree_cache_path(self, oid: str) -> str:
        return f"{self.data_dir}/trees/{oid}"

    def _cached_tree(self, oid: str, st: os.stat_result) -> Tree | None:
        try:
            with open(self._tree_cache_path(oid), "rb") as fh:
                value = marshal.loads(fh.read())  # (marshal.load reads a file in tiny steps)
            version, key, ident, paths, oids, sizes, packs, offsets = value
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if version != _TREE_CACHE_VERSION or key != oid or ident != (st.st_ino, st.st_size, st.st_mtime_ns):
            return None
        new = tuple.__new__  # TreeEntry(...) without its Python-level __new__
        try:
            return Tree([new(TreeEntry, row) for row in zip(paths, oids, sizes, packs, offsets, strict=True)])
        except (TypeError, ValueError):
            return None

    def forget_cached_trees(self, oids: Sequence[str]) -> None:
        """Drop the parsed copies of trees removed from the cache."""
        for oid in oids:
            with contextlib.suppress(OSError):
                os.unlink(self._tree_cache_path(oid))

    def _cache_tree(self, oid: str, tree: Tree, st: os.stat_result) -> None:
        """Remember a parsed (or just written) tree; best effort."""
        entries = tree.entries
        value = (
            _TREE_CACHE_VERSION,
            oid,
            (st.st_ino, st.st_size, st.st_mtime_ns),
            [e.path for e in entries],
            [e.oid for e in entries],
            [e.size for e in entries],
            [e.pack for e in entries],
            [e.offset for e in entries],
        )
        path = self._tree_cache_path(oid)
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, marshal.dumps(value), fsync=False)  # a cache: rebuilt if lost

    def refetch(self, oids: Sequence[str], quiet: bool = False) -> bool:
        """Fetch ``oids`` again from the default remote (replacing corrupt copies);
        True if all arrived. With ``quiet``, a missing remote just returns False."""
        from keel.services.data_remote import refetch_objects

        return refetch_objects(self, list(oids), quiet=quiet)

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

    # -- add ----------------------------------------------------------------------------------
    def add(
        self, paths: Sequence[str | os.PathLike[str]], link: str | None = None, progress: Progress | None = None
    ) -> list[AddResult]:
        """Track ``paths`` (files or folders): store their content, write ``PATH.keel``
        and ``.gitignore`` entries, register the versions. See the module docstring.

        ``progress(done, total)`` counts the bytes read and hashed (files the stat
        cache vouches for are not read, so they are not counted); the total grows as
        each path is looked at."""
        if not paths:
            raise InvalidInput("nothing to add", "give one or more files or folders: keel data add PATH...")
        mode = check_link_mode(link or self.config.link)
        targets: list[tuple[str, os.stat_result]] = []
        for path in paths:
            rel = check_rel_path(self.rel(path))
            targets.append((rel, self._check_addable(path, rel)))
        results = []
        counter = meter(progress)
        with self.locked():
            for rel, st in targets:
                if os.path.isdir(self.abs(rel)):
                    results.append(self._add_dir(rel, mode, counter))
                else:
                    results.append(self._add_file(rel, st, mode, counter))
        counter.close()
        from keel.services.data_git import head_commit
        from keel.services.data_versions import register_versions

        commit = head_commit(self.root)
        register_versions(self.root, [(r.path, r.oid, r.kind, r.size, r.files, commit) for r in results])
        return results

    def _check_addable(self, given: str | os.PathLike[str], rel: str) -> os.stat_result:
        absolute = self.abs(rel)
        try:
            st = os.lstat(absolute)
        except FileNotFoundError:
            raise NotFound(f"{given} does not exist", "check the path") from None
        if os.path.islink(absolute):
            raise InvalidInput(f"{given} is a symlink", _SYMLINK_HINT)
        if not (os.path.isdir(absolute) or os.path.isfile(absolute)):
            raise InvalidInput(f"{given} is neither a file nor a folder", "keel tracks regular files and folders")
        if rel.endswith(POINTER_SUFFIX):
            raise InvalidInput(f"{given} is a pointer file", "add the data it stands for, without the .keel suffix")
        ancestor = self.tracking_ancestor(rel)
        if ancestor is not None:
            folder = ancestor[: -len(POINTER_SUFFIX)]
            raise InvalidInput(
                f"{given} is inside {folder}/, which is tracked already ({ancestor})",
                f"run 'keel data add {folder}' to record changes to the folder",
            )
        return st

    def _finish_add(self, rel: str, pointer: Pointer) -> bool:
        pointer_rel = rel + POINTER_SUFFIX
        changed = self.write_pointer(pointer_rel, pointer)
        folder, name = os.path.split(self.abs(rel))
        files_.ensure_gitignored(Path(folder), name)
        return changed

    def store_large(self, f: FileStat, mode: str, counted: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """Hash a large file and put it in the cache as a loose object; ``(oid, stored)``.

        With a link mode the cache object shares the file's data (a hard link makes both
        read-only, so an in-place edit cannot corrupt the cache); else it is copied.
        ``counted(n)`` is told of the bytes hashed, 16 MiB at a time.
        """
        mode = files_.effective_mode(mode, self.cache.root / "tmp")
        if mode == "copy":
            return self._store_copy(f, counted)
        oid, st = files_.hash_large(f.path, f.rel, f, counted)
        if self.has(oid):
            return oid, False
        tmp = files_.tmp_name(self.cache.root / "tmp")
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
        tmp = files_.tmp_name(self.cache.root / "tmp")
        try:
            if f.mtime + RACY_NS < time.time_ns():
                both = None if counted is None else _CopiedAndHashed(counted, tmp)
                with ThreadPoolExecutor(1) as pool:
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
            os.chmod(tmp, files_.READ_ONLY)
            self._commit_tmp(tmp, oid)
            return oid, True
        except OSError as exc:
            raise os_error(exc, f"cannot store {f.rel} in the cache") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _commit_tmp(self, tmp: str, oid: str) -> None:
        final = self.cache.path(oid)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        st = os.stat(final)
        self.state.set_checked([(oid, st.st_ino, st.st_size, st.st_mtime_ns)])

    def _add_file(self, rel: str, st: os.stat_result, mode: str, counter: Meter) -> AddResult:
        f = FileStat(rel, self.abs(rel), st.st_ino, st.st_size, st.st_mtime_ns)
        row = self.state.stats_under(rel).get(rel)
        hashed = stored = False
        if trusted(row, f):
            oid = row[3]  # type: ignore[index]
        elif f.size < PACK_MAX_FILE:
            data = files_.read_small(f)
            oid, hashed = blake3.blake3(data).hexdigest(), True
            if not self.has(oid):
                self.put_object(data)
                stored = True
            counter.grow(f.size)
            counter.add(f.size)
        else:
            counter.grow(f.size)
            oid, stored = self.store_large(f, mode, counter.add)
            hashed = True
        if not self.has(oid):  # the stat cache knew it, but the cache lost it: store it again
            if f.size < PACK_MAX_FILE:
                data = files_.read_small(f)
                if blake3.blake3(data).hexdigest() != oid:
                    raise files_.changed_while_hashing(rel)
                self.put_object(data)
            else:
                oid, _ = self.store_large(f, mode)
            stored = True
        if hashed or stored:
            after = os.stat(f.path)
            self.state.save_stats([(rel, after.st_ino, after.st_size, after.st_mtime_ns, oid)])
        if stored:
            self.record_objects([(oid, "loose")])
        pointer = Pointer("file", posixpath.basename(rel), oid, f.size)
        changed = self._finish_add(rel, pointer)
        return AddResult(rel, rel + POINTER_SUFFIX, "file", oid, f.size, 1, changed, int(hashed), int(stored))

    def _add_dir(self, rel: str, mode: str, counter: Meter) -> AddResult:
        found, other = files_.walk(self.abs(rel), rel)
        if other:
            shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
            raise InvalidInput(f"{rel}/ holds symlinks or special files: {shown}", _SYMLINK_HINT)
        found.sort()
        start = len(rel) + 1
        for f in found:
            name = f.rel
            if name.endswith(POINTER_SUFFIX):
                raise InvalidInput(
                    f"{rel}/ contains tracked data ({name})",
                    f"remove the pointer files inside it first (or track {name[: -len(POINTER_SUFFIX)]} alone)",
                )
        # The rule every tree is read back with (keel.core.data_tree.parse_tree), checked here
        # so a folder keel tracks can always be checked out again.
        check_tree_paths([f.rel[start:] for f in found], f"{rel}/")

        cached = self.state.stats_under(rel)
        now = time.time_ns()
        old_tree = self._old_tree(rel)
        old_locations = {e.oid: (e.pack, e.offset) for e in old_tree[1].entries if e.pack} if old_tree else {}
        items = [_Located(f) for f in found]
        small_todo: list[_Located] = []
        large_todo: list[_Located] = []
        need_location: list[_Located] = []
        for item in items:
            f = item.f
            row = cached.get(f.rel)
            if trusted(row, f):
                item.oid = row[3]  # type: ignore[index]
                if f.size < PACK_MAX_FILE:
                    where = old_locations.get(item.oid)
                    if where is None:
                        need_location.append(item)
                    else:
                        item.pack, item.offset = where
                elif not self.has(item.oid):
                    large_todo.append(item)
            elif f.size < PACK_MAX_FILE:
                small_todo.append(item)
            else:
                large_todo.append(item)
        if need_location:
            where_map = self.usable_locations({i.oid for i in need_location})
            for item in need_location:
                where = where_map.get(item.oid)
                if where is None:
                    small_todo.append(item)  # not in the cache any more: read it again
                else:
                    item.pack, item.offset = where
        # Packs the unchanged files point at must still be in the cache.
        referenced = {i.pack for i in items if i.pack}
        missing_packs = {p for p in referenced if not self.has(p)}
        if missing_packs:
            for item in items:
                if item.pack in missing_packs:
                    item.pack = ""
                    small_todo.append(item)
        small_todo.sort(key=lambda i: i.f.rel)
        counter.grow(sum(i.f.size for i in small_todo) + sum(i.f.size for i in large_todo))

        fresh: list[tuple[str, int, int, int, str]] = []
        stored = 0
        try:
            writer = _PackWriter(self, dict(old_locations))
            try:
                read_small, b3, add_packed, count = files_.read_small, blake3.blake3, writer.add, counter.add
                pending = 0  # bytes read since the last count: counted a MiB at a time
                for item in small_todo:
                    f = item.f
                    data = read_small(f)
                    item.oid = oid = b3(data).hexdigest()
                    fresh.append((f.rel, f.ino, f.size, f.mtime, oid))
                    add_packed(item, data)
                    pending += f.size
                    if pending >= _COUNT_EVERY:
                        count(pending)
                        pending = 0
                count(pending)
                writer.flush()
            finally:
                writer.close()
            stored += len(writer.new_packs)
            loose: list[str] = []
            for item in large_todo:
                item.oid, was_stored = self.store_large(item.f, mode, counter.add)
                after = os.stat(item.f.path)
                fresh.append((item.f.rel, after.st_ino, after.st_size, after.st_mtime_ns, item.oid))
                loose.append(item.oid)
                stored += int(was_stored)
            new = tuple.__new__
            tree = Tree([new(TreeEntry, (i.f.rel[start:], i.oid, i.f.size, i.pack, i.offset)) for i in items])
            if old_tree is not None and tree.entries == old_tree[1].entries:
                tree_oid = old_tree[0]  # the same files in the same places: the version in the pointer
            else:
                encoded = tree.encode()
                tree_oid = blake3.blake3(encoded).hexdigest()
                if not self.has(tree_oid):
                    self.put_object(encoded)
                    stored += 1
            if not os.path.exists(self._tree_cache_path(tree_oid)):
                tree_st = self._object_stat(tree_oid)
                if tree_st is not None:
                    self._cache_tree(tree_oid, tree, tree_st)
        except OSError as exc:
            raise os_error(exc, f"cannot add {rel}") from exc
        if writer.new_locations:
            self.state.add_locations(writer.new_locations)
        self.record_objects(
            [(p, "pack") for p in writer.new_packs] + [(o, "loose") for o in loose] + [(tree_oid, "tree")]
        )
        if fresh:
            self.state.save_stats(fresh, now)
        current = {i.f.rel for i in items}
        gone = [p for p in cached if p not in current]
        if gone:
            self.state.forget_stats(gone)
        size = sum(i.f.size for i in items)
        pointer = Pointer("dir", posixpath.basename(rel), tree_oid, size, len(items))
        changed = self._finish_add(rel, pointer)
        return AddResult(rel, rel + POINTER_SUFFIX, "dir", tree_oid, size, len(items), changed, len(fresh), stored)

    def _old_tree(self, rel: str) -> tuple[str, Tree] | None:
        """``(oid, tree)`` of the version now in ``rel.keel``, if its tree is cached."""
        try:
            pointer = self.read_pointer(rel + POINTER_SUFFIX)
        except KeelError:
            return None
        if not pointer.is_dir or not self.has(pointer.oid):
            return None
        try:
            return pointer.oid, self.load_tree(pointer.oid, rel, fetch=False)
        except KeelError:
            return None

    def store_tree(self, files: Sequence[FileStat], mode: str = "copy") -> tuple[str, Tree, int]:
        """Store files that are not in the workspace as one directory version, the way
        ``add`` stores a folder (small files packed, large ones loose, content already in
        the cache reused); ``(tree oid, tree, objects written)``. Each ``FileStat.rel`` is
        the file's path inside the folder, ``path`` where its bytes are (importers use it)."""
        check_tree_paths([f.rel for f in files], "an imported folder")
        items = [_Located(f) for f in sorted(files)]
        loose: list[str] = []
        stored = 0
        writer = _PackWriter(self, {})
        try:
            try:
                for item in items:
                    if item.f.size < PACK_MAX_FILE:
                        data = files_.read_small(item.f)
                        item.oid = blake3.blake3(data).hexdigest()
                        writer.add(item, data)
                writer.flush()
            finally:
                writer.close()
            for item in items:
                if item.f.size >= PACK_MAX_FILE:
                    item.oid, was_stored = self.store_large(item.f, mode)
                    loose.append(item.oid)
                    stored += int(was_stored)
            tree = Tree([TreeEntry(i.f.rel, i.oid, i.f.size, i.pack, i.offset) for i in items])
            encoded = tree.encode()
            tree_oid = blake3.blake3(encoded).hexdigest()
            if not self.has(tree_oid):
                self.put_object(encoded)
                stored += 1
        except OSError as exc:
            raise os_error(exc, "cannot store a folder in the cache") from exc
        if writer.new_locations:
            self.state.add_locations(writer.new_locations)
        self.record_objects(
            [(p, "pack") for p in writer.new_packs] + [(o, "loose") for o in loose] + [(tree_oid, "tree")]
        )
        return tree_oid, tree, stored + len(writer.new_packs)


def trusted(row: StatRow | None, f: FileStat) -> bool:
    """True if stat cache ``row`` still describes file ``f`` (same inode, size and mtime,
    and recorded more than RACY_NS after the file last changed)."""
    return row is not None and row[0] == f.ino and row[1] == f.size and row[2] == f.mtime and f.mtime + RACY_NS < row[4]


def open_repo(start: str | os.PathLike[str] | None = None) -> DataRepo:
    """The :class:`DataRepo` of the workspace at or above ``start`` (default: here)."""
    return DataRepo(find_root(start))


def add(
    paths: Sequence[str | os.PathLike[str]], link: str | None = None, progress: Progress | None = None
) -> list[AddResult]:
    """Track ``paths`` in the workspace of the current folder (see :meth:`DataRepo.add`)."""
    with open_repo() as repo:
        return repo.add(paths, link, progress)


def conflict(paths: Sequence[str], what: str, hint: str) -> Conflict:
    """A Conflict naming up to 10 ``paths``."""
    shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    return Conflict(f"{what}: {shown}", hint)
