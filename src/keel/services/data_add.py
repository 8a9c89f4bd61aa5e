"""``keel data add``: hash files, store their bytes, write the pointer file.

A folder is walked once; each file the stat cache vouches for
(:func:`~keel.services.data_cache.trusted`: same inode, size and mtime, recorded
after its last change) keeps its oid and its place in a pack without being
read, and nothing about it is looked up in the object store: its pack is the
previous version's; when every file is as that version has it, the version is
the answer without building a tree. The other files are read and hashed, small
ones in path order and packed (:class:`~keel.objects.packs.PackWriter`, which
writes each pack on a background thread while the next files are read; see
:mod:`~keel.services.data_files` for why hashing stays on one thread); large ones become loose
objects, hashed while the kernel copies them (or linked, see ``link``). The
tree is stored, the pointer file ``PATH.keel`` written, ``PATH`` added to the
``.gitignore`` beside it, and the version registered in the metadata store.

:func:`store_tree` stores files from elsewhere (an importer's) the same way.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from keel.core.data_pointer import POINTER_SUFFIX, Pointer
from keel.core.data_tree import PACK_MAX_FILE, Tree, TreeEntry, check_rel_path, check_tree_paths
from keel.core.progress import Meter, Progress, meter
from keel.errors import InvalidInput, KeelError, NotFound
from keel.objects.packs import PackWriter
from keel.services import data_files as files_
from keel.services.data_cache import trusted
from keel.services.data_config import check_link_mode
from keel.services.data_files import FileStat, os_error
from keel.services.data_state import StatRow

if TYPE_CHECKING:
    from keel.services.data import DataRepo

__all__ = ["AddResult", "add_paths", "store_tree"]

_COUNT_EVERY = 1 << 20  # bytes of small files read between two progress counts
_SYMLINK_HINT = (
    "keel does not follow or store symlinks: replace the link with a copy of its target, "
    "or track the target where it lives"
)


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


def add_paths(
    repo: DataRepo, paths: Sequence[str | os.PathLike[str]], link: str | None = None, progress: Progress | None = None
) -> list[AddResult]:
    """Track ``paths`` (files or folders): store their content, write ``PATH.keel``
    and ``.gitignore`` entries, register the versions. See the module docstring.

    ``progress(done, total)`` counts the bytes read and hashed (files the stat
    cache vouches for are not read, so they are not counted); the total grows as
    each path is looked at."""
    if not paths:
        raise InvalidInput("nothing to add", "give one or more files or folders: keel data add PATH...")
    mode = check_link_mode(link or repo.config.link)
    targets: list[tuple[str, os.stat_result]] = []
    for path in paths:
        rel = check_rel_path(repo.rel(path))
        targets.append((rel, _check_addable(repo, path, rel)))
    results = []
    counter = meter(progress)
    with repo.locked():
        for rel, st in targets:
            if os.path.isdir(repo.abs(rel)):
                results.append(_add_dir(repo, rel, mode, counter))
            else:
                results.append(_add_file(repo, rel, st, mode, counter))
    counter.close()
    from keel.services.data_git import head_commit
    from keel.services.data_versions import register_versions

    commit = head_commit(repo.root)
    register_versions(repo.root, [(r.path, r.oid, r.kind, r.size, r.files, commit) for r in results])
    return results


def _check_addable(repo: DataRepo, given: str | os.PathLike[str], rel: str) -> os.stat_result:
    absolute = repo.abs(rel)
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
    ancestor = repo.tracking_ancestor(rel)
    if ancestor is not None:
        folder = ancestor[: -len(POINTER_SUFFIX)]
        raise InvalidInput(
            f"{given} is inside {folder}/, which is tracked already ({ancestor})",
            f"run 'keel data add {folder}' to record changes to the folder",
        )
    return st


def _finish_add(repo: DataRepo, rel: str, pointer: Pointer) -> bool:
    pointer_rel = rel + POINTER_SUFFIX
    changed = repo.write_pointer(pointer_rel, pointer)
    folder, name = os.path.split(repo.abs(rel))
    files_.ensure_gitignored(Path(folder), name)
    return changed


def _add_file(repo: DataRepo, rel: str, st: os.stat_result, mode: str, counter: Meter) -> AddResult:
    f = FileStat(rel, repo.abs(rel), st.st_ino, st.st_size, st.st_mtime_ns, files_.is_executable(st.st_mode))
    now = time.time_ns()  # before the file is read: what the stat cache entry vouches for
    row = repo.state.stats_under(rel).get(rel)
    hashed = stored = False
    if trusted(row, f):
        oid = row[3]  # type: ignore[index]
    elif f.size < PACK_MAX_FILE:
        data = files_.read_small(f)
        oid, hashed = blake3.blake3(data).hexdigest(), True
        if not repo.has(oid):
            repo.put_object(data)
            stored = True
        counter.grow(f.size)
        counter.add(f.size)
    else:
        counter.grow(f.size)
        oid, stored = repo.store_large(f, _link_mode(repo, mode, f), counter.add)
        hashed = True
    if not repo.has(oid):  # the stat cache knew it, but the cache lost it: store it again
        if f.size < PACK_MAX_FILE:
            data = files_.read_small(f)
            if blake3.blake3(data).hexdigest() != oid:
                raise files_.changed_while_hashing(rel)
            repo.put_object(data)
        else:
            oid, _ = repo.store_large(f, _link_mode(repo, mode, f))
        stored = True
    if hashed or stored:
        after = os.stat(f.path)
        repo.state.save_stats([(rel, after.st_ino, after.st_size, after.st_mtime_ns, oid)], now)
    if stored:
        repo.record_objects([(oid, "loose")])
    pointer = Pointer("file", posixpath.basename(rel), oid, f.size, executable=f.executable)
    changed = _finish_add(repo, rel, pointer)
    return AddResult(rel, rel + POINTER_SUFFIX, "file", oid, f.size, 1, changed, int(hashed), int(stored))


def _add_dir(repo: DataRepo, rel: str, mode: str, counter: Meter) -> AddResult:
    found, other = files_.walk(repo.abs(rel), rel)
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
    cached = repo.state.stats_under(rel)
    now = time.time_ns()
    old_tree = _old_tree(repo, rel)
    executable = frozenset(f.rel[start:] for f in found if f.executable)
    if (
        old_tree is not None
        and executable == old_tree[1].executable
        and _unchanged(found, cached, old_tree[1], start)
        and _stored(repo, old_tree[1])
    ):
        # Every file is where the version in the pointer has it, as the stat cache vouches:
        # that version, without building or checking a tree (its paths were checked when stored).
        size = sum(f.size for f in found)
        pointer = Pointer("dir", posixpath.basename(rel), old_tree[0], size, len(found))
        changed = _finish_add(repo, rel, pointer)
        return AddResult(rel, rel + POINTER_SUFFIX, "dir", old_tree[0], size, len(found), changed, 0, 0)
    # The rule every tree is read back with (keel.core.data_tree.parse_tree), checked here
    # so a folder keel tracks can always be checked out again.
    check_tree_paths([f.rel[start:] for f in found], f"{rel}/")
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
            elif not repo.has(item.oid):
                large_todo.append(item)
        elif f.size < PACK_MAX_FILE:
            small_todo.append(item)
        else:
            large_todo.append(item)
    if need_location:
        where_map = repo.usable_locations({i.oid for i in need_location})
        for item in need_location:
            where = where_map.get(item.oid)
            if where is None:
                small_todo.append(item)  # not in the cache any more: read it again
            else:
                item.pack, item.offset = where
    # Packs the unchanged files point at must still be in the cache.
    referenced = {i.pack for i in items if i.pack}
    missing_packs = {p for p in referenced if not repo.has(p)}
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
        writer = PackWriter(repo.cache, repo.usable_locations, old_locations, repo.write_object)
        try:
            add_packed, count = writer.add, counter.add
            pending = 0  # bytes read since the last count: counted a MiB at a time
            hashed = files_.read_and_hash([i.f for i in small_todo])
            for item, (data, oid) in zip(small_todo, hashed, strict=True):
                f = item.f
                item.oid = oid
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
            item.oid, was_stored = repo.store_large(item.f, _link_mode(repo, mode, item.f), counter.add)
            after = os.stat(item.f.path)
            fresh.append((item.f.rel, after.st_ino, after.st_size, after.st_mtime_ns, item.oid))
            loose.append(item.oid)
            stored += int(was_stored)
        new = tuple.__new__
        tree = Tree([new(TreeEntry, (i.f.rel[start:], i.oid, i.f.size, i.pack, i.offset)) for i in items], executable)
        if old_tree is not None and tree.entries == old_tree[1].entries and executable == old_tree[1].executable:
            tree_oid = old_tree[0]  # the same files in the same places: the version in the pointer
        else:
            encoded = tree.encode()
            tree_oid = blake3.blake3(encoded).hexdigest()
            if not repo.has(tree_oid):
                repo.put_object(encoded)
                stored += 1
        repo.cache_tree(tree_oid, tree)
    except OSError as exc:
        raise os_error(exc, f"cannot add {rel}") from exc
    if writer.new_locations:
        repo.state.add_locations(writer.new_locations)
    same = old_tree is not None and tree_oid == old_tree[0]  # (its objects are recorded already)
    objects = [(p, "pack") for p in writer.new_packs] + [(o, "loose") for o in loose]
    repo.record_objects(objects + ([] if same else [(tree_oid, "tree")]))
    if fresh:
        repo.state.save_stats(fresh, now)
    current = {i.f.rel for i in items}
    gone = [p for p in cached if p not in current]
    if gone:
        repo.state.forget_stats(gone)
    size = sum(i.f.size for i in items)
    pointer = Pointer("dir", posixpath.basename(rel), tree_oid, size, len(items))
    changed = _finish_add(repo, rel, pointer)
    return AddResult(rel, rel + POINTER_SUFFIX, "dir", tree_oid, size, len(items), changed, len(fresh), stored)


def _link_mode(repo: DataRepo, mode: str, f: FileStat) -> str:
    """How a large file enters the cache: an executable one is never hard-linked (the
    link would share one mode, and the cache object is made read-only: the file
    would lose its ``x`` bit, and a later ``chmod`` of it would change the cache's)."""
    if f.executable and files_.effective_mode(mode, repo.cache.tmp_folder()) == "hardlink":
        return "copy"
    return mode


def _unchanged(found: list[FileStat], cached: dict[str, StatRow], tree: Tree, start: int) -> bool:
    """True if ``found`` (sorted) are exactly ``tree``'s files, each vouched for by the stat cache."""
    entries = tree.entries
    if len(found) != len(entries) or len(cached) != len(found):
        return False
    get = cached.get
    for f, e in zip(found, entries, strict=True):
        row = get(f.rel)
        if row is None or row[3] != e.oid or f.rel[start:] != e.path or not trusted(row, f):
            return False
    return True


def _stored(repo: DataRepo, tree: Tree) -> bool:
    """True if the cache holds every object ``tree`` needs (a few packs, and its large files)."""
    return all(repo.has(o) for o in tree.objects())


def _old_tree(repo: DataRepo, rel: str) -> tuple[str, Tree] | None:
    """``(oid, tree)`` of the version now in ``rel.keel``, if its tree is cached."""
    try:
        pointer = repo.read_pointer(rel + POINTER_SUFFIX)
    except KeelError:
        return None
    if not pointer.is_dir or not repo.has(pointer.oid):
        return None
    try:
        return pointer.oid, repo.load_tree(pointer.oid, rel, fetch=False)
    except KeelError:
        return None


def store_tree(repo: DataRepo, files: Sequence[FileStat], mode: str = "copy") -> tuple[str, Tree, int]:
    """Store files that are not in the workspace as one directory version, the way
    ``add`` stores a folder (small files packed, large ones loose, content already in
    the cache reused); ``(tree oid, tree, objects written)``. Each ``FileStat.rel`` is
    the file's path inside the folder, ``path`` where its bytes are (importers use it)."""
    check_tree_paths([f.rel for f in files], "an imported folder")
    items = [_Located(f) for f in sorted(files)]
    loose: list[str] = []
    stored = 0
    writer = PackWriter(repo.cache, repo.usable_locations, None, repo.write_object)
    try:
        try:
            small = [i for i in items if i.f.size < PACK_MAX_FILE]
            for item, (data, oid) in zip(small, files_.read_and_hash([i.f for i in small]), strict=True):
                item.oid = oid
                writer.add(item, data)
            writer.flush()
        finally:
            writer.close()
        for item in items:
            if item.f.size >= PACK_MAX_FILE:
                item.oid, was_stored = repo.store_large(item.f, mode)
                loose.append(item.oid)
                stored += int(was_stored)
        executable = frozenset(i.f.rel for i in items if i.f.executable)
        tree = Tree([TreeEntry(i.f.rel, i.oid, i.f.size, i.pack, i.offset) for i in items], executable)
        encoded = tree.encode()
        tree_oid = blake3.blake3(encoded).hexdigest()
        if not repo.has(tree_oid):
            repo.put_object(encoded)
            stored += 1
    except OSError as exc:
        raise os_error(exc, "cannot store a folder in the cache") from exc
    if writer.new_locations:
        repo.state.add_locations(writer.new_locations)
    repo.record_objects([(p, "pack") for p in writer.new_packs] + [(o, "loose") for o in loose] + [(tree_oid, "tree")])
    return tree_oid, tree, stored + len(writer.new_packs)
