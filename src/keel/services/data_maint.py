"""Status, diff, garbage collection and verification of tracked data.

- :func:`status`: the workspace's data against its pointer files (stat cache first).
- :func:`diff`: files added, removed and modified between two versions of the
  pointer files: two git revisions, or a revision and the working tree's
  pointers (what ``keel data add`` recorded; ``status`` shows changes not yet added).
- :func:`gc`: removes data objects no pointer of the workspace (or of any
  commit, with ``all_commits``) reaches. It only ever considers objects the
  data layer wrote (never run artifacts or other registries' content) and keeps
  any object a run or a registered model version references, and every
  version of data some run used.
- :func:`verify`: re-hashes the cache objects the pointers use (and with
  ``workspace`` the workspace files), reports problems by data path and
  fetches corrupt objects again from the default remote when it can.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.data_pointer import Pointer, parse_pointer
from keel.core.data_tree import Tree, TreeDiff, diff_entries
from keel.errors import KeelError, NotFound
from keel.services import data_files as files_
from keel.services.data import DataRepo, Tracked
from keel.services.data_files import FileStat
from keel.services.data_history import sources_for

__all__ = ["DataChange", "GcResult", "PathStatus", "VerifyProblem", "diff", "gc", "status", "verify"]


@dataclass
class PathStatus:
    """One tracked path against its pointer file."""

    path: str
    kind: str
    state: str  # ok | modified | missing | unknown (version not in the cache)
    changes: TreeDiff = field(default_factory=TreeDiff)
    interrupted: bool = False  # a checkout of this path did not finish: 'keel data checkout' completes it
    warnings: list[str] = field(default_factory=list)  # e.g. a .dvc file naming other data than the pointer

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "path": self.path,
            "kind": self.kind,
            "state": self.state,
            **self.changes.to_dict(),
            "interrupted": self.interrupted,
            "warnings": self.warnings,
        }


def _workspace_files(repo: DataRepo, tracked: Tracked) -> tuple[list[FileStat], list[str]]:
    absolute = repo.abs(tracked.data_path)
    if os.path.isdir(absolute) and not os.path.islink(absolute):
        return files_.walk(absolute, tracked.data_path)
    if os.path.isfile(absolute) and not os.path.islink(absolute):
        st = os.lstat(absolute)
        executable = files_.is_executable(st.st_mode)
        return [FileStat(tracked.data_path, absolute, st.st_ino, st.st_size, st.st_mtime_ns, executable)], []
    return [], [tracked.data_path] if os.path.lexists(absolute) else []


def _status_one(repo: DataRepo, tracked: Tracked, rehash: bool = False) -> PathStatus:
    rel = tracked.data_path
    pointer = tracked.pointer
    found, other = _workspace_files(repo, tracked)
    if not found and not other:
        return PathStatus(rel, pointer.kind, "missing")
    if pointer.is_dir:
        try:
            tree = repo.load_tree(pointer.oid, rel, fetch=False)
        except NotFound:
            return PathStatus(rel, pointer.kind, "unknown")
        wanted = {rel + "/" + e.path: e.oid for e in tree.entries}
        wanted_x = {rel + "/" + p for p in tree.executable}
    else:
        wanted = {rel: pointer.oid}
        wanted_x = {rel} if pointer.executable else set()
    cached = repo.state.stats_under(rel)
    candidates = [f for f in found if f.rel in wanted]
    current = repo.current_oids(candidates, cached, rehash=rehash)
    for f in found:
        if f.rel not in wanted:
            current[f.rel] = ""  # new: its hash does not matter
    for name in other:
        current[name] = "?"
    current_x = {f.rel for f in found if f.executable}
    changes = diff_entries(wanted, current, wanted_x, current_x)
    return PathStatus(rel, pointer.kind, "modified" if changes else "ok", changes)


def status(repo: DataRepo, paths: Sequence[str | os.PathLike[str]] | None = None) -> list[PathStatus]:
    """Each tracked path (all, or those named) compared with its pointer file.

    A path that an interrupted checkout was changing (see :mod:`.data_checkout`) is
    ``modified`` with ``interrupted`` set, whatever its files say, until a checkout
    completes it (and removes the folders it left). A path whose pointer another tool's
    file contradicts (a ``.dvc`` file after ``dvc add``) carries a warning saying what
    each file says."""
    from keel.services.data_workspace import JOURNAL, read_journal

    selected = repo.select(paths)
    created, roots = read_journal(repo.data_dir / JOURNAL)
    out = []
    for tracked in selected:
        one = _status_one(repo, tracked)
        rel = tracked.data_path
        if (created or roots) and (rel in roots or any(p == rel or p.startswith(rel + "/") for p in created)):
            one.interrupted = True
            if one.state == "ok":
                one.state = "modified"
        out.append(one)
    found = {d.path: d for source in sources_for(repo.root) for d in source.disagreements(repo, selected)}
    for one in out:
        if one.path in found:
            one.warnings.append(found[one.path].message(one.state in ("ok", "modified") and not one.changes))
    return out


# -- diff -----------------------------------------------------------------------------------
@dataclass
class DataChange:
    """How one tracked path differs between two versions."""

    path: str
    change: str  # added | removed | modified
    kind: str
    old_oid: str | None
    new_oid: str | None
    files: TreeDiff | None = None  # file-level changes, when both trees are available

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = {k: v for k, v in self.__dict__.items() if k != "files"}
        out["files"] = self.files.to_dict() if self.files is not None else None
        return out


def _parse_all(blobs: Iterable[tuple[str, bytes]]) -> list[tuple[str, Pointer]]:
    """``(data path, pointer)`` of every blob that is a pointer file."""
    out = []
    for path, content in blobs:
        try:
            pointer = parse_pointer(content.decode("utf-8"), path)
        except (KeelError, UnicodeDecodeError):
            continue  # a file that merely ends in .keel
        out.append((posixpath.join(posixpath.dirname(path), pointer.path), pointer))
    return out


def _pointer_map(blobs: dict[str, bytes]) -> dict[str, Pointer]:
    return dict(_parse_all(blobs.items()))


def _workspace_pointers(repo: DataRepo) -> dict[str, Pointer]:
    return {t.data_path: t.pointer for t in repo.select(None)}


def _files_of(repo: DataRepo, path: str, pointer: Pointer) -> tuple[dict[str, str], set[str]] | None:
    """``({file path: oid}, executable file paths)`` of a version (None: its tree is not here)."""
    if not pointer.is_dir:
        return {path: pointer.oid}, ({path} if pointer.executable else set())
    try:
        tree = repo.load_tree(pointer.oid, path)
    except KeelError:
        return None
    return {path + "/" + e.path: e.oid for e in tree.entries}, {path + "/" + p for p in tree.executable}


def diff(repo: DataRepo, rev_a: str | None = None, rev_b: str | None = None) -> list[DataChange]:
    """What changed in tracked data from ``rev_a`` (default HEAD) to ``rev_b`` (default:
    the working tree's pointer files)."""
    from keel.services.data_git import pointers_at

    old = _pointer_map(pointers_at(repo.root, rev_a or "HEAD"))
    new = _pointer_map(pointers_at(repo.root, rev_b)) if rev_b else _workspace_pointers(repo)
    changes: list[DataChange] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a is not None and b is not None and a.oid == b.oid and a.executable == b.executable:
            continue
        if a is None:
            assert b is not None
            files = _files_of(repo, path, b)
            changes.append(
                DataChange(
                    path, "added", b.kind, None, b.oid, diff_entries({}, files[0]) if files is not None else None
                )
            )
        elif b is None:
            files = _files_of(repo, path, a)
            changes.append(
                DataChange(
                    path, "removed", a.kind, a.oid, None, diff_entries(files[0], {}) if files is not None else None
                )
            )
        else:
            fa, fb = _files_of(repo, path, a), _files_of(repo, path, b)
            files_diff = diff_entries(fa[0], fb[0], fa[1], fb[1]) if fa is not None and fb is not None else None
            changes.append(DataChange(path, "modified", b.kind, a.oid, b.oid, files_diff))
    return changes


# -- gc --------------------------------------------------------------------------------------------
@dataclass
class GcResult:
    """What gc removed (or, with ``dry_run``, would remove)."""

    removed: list[str] = field(default_factory=list)
    bytes: int = 0
    kept: int = 0
    dry_run: bool = False
    unknown_versions: int = 0  # reachable versions whose tree is not in the cache (nothing of theirs to keep)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def _reach(repo: DataRepo, oid: str, kind: str, keep: set[str]) -> bool:
    """Add ``oid`` and (for a tree) everything it lists to ``keep``; False if the tree is unknown."""
    keep.add(oid)
    if kind != "dir":
        return True
    if not repo.has(oid):
        return False
    try:
        tree: Tree = repo.load_tree(oid, oid[:12], fetch=False)
    except KeelError:
        return False
    keep.update(tree.objects())
    return True


def gc(repo: DataRepo, all_commits: bool = False, dry_run: bool = False) -> GcResult:
    """Remove unreachable data objects from the cache (see the module docstring)."""
    from keel.services.data_git import all_commit_pointers
    from keel.services.data_versions import all_version_oids, open_meta, protected_oids

    result = GcResult(dry_run=dry_run)
    with repo.locked():
        keep: set[str] = set()
        pointers = list(_workspace_pointers(repo).values())
        if all_commits:
            pointers += [p for _, p in _parse_all(all_commit_pointers(repo.root))]
            for source in sources_for(repo.root):  # commits from before an import name data in another tool's files
                pointers += source.history_pointers(repo)
        for pointer in pointers:
            if not _reach(repo, pointer.oid, pointer.kind, keep):
                result.unknown_versions += 1
        store = open_meta(repo.root)
        protected, used_versions = protected_oids(store)
        keep |= protected
        for oid in used_versions:
            _reach(repo, oid, "dir" if _is_tree(repo, oid) else "file", keep)
        owned = set(repo.state.owned_objects())
        for oid in all_version_oids(store):
            owned.add(oid)
            if _is_tree(repo, oid):
                _reach(repo, oid, "dir", owned)
        doomed = sorted(o for o in owned - keep if repo.has(o))
        result.kept = len(owned & keep)
        for oid in doomed:
            path = repo.cache.path(oid)
            try:
                result.bytes += os.stat(path).st_size
                if not dry_run:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            result.removed.append(oid)
        if not dry_run:
            repo.state.forget_objects(doomed)
            repo.forget_cached_trees(doomed)
    return result


def _is_tree(repo: DataRepo, oid: str) -> bool:
    if not repo.has(oid):
        return False
    try:
        with open(repo.cache.path(oid), "rb") as fh:
            return fh.read(12) == b"keel-tree 1\n"
    except OSError:
        return False


# -- verify -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerifyProblem:
    """A corrupt, missing or modified piece of tracked data."""

    path: str  # the tracked path (and file, for workspace problems)
    oid: str
    problem: str  # corrupt | missing | modified
    repaired: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def _slice_ok(repo: DataRepo, pack: str, offset: int, size: int, oid: str) -> bool:
    import blake3

    from keel.objects.packs import mapped

    with mapped(repo.cache.path(pack)) as view:
        if offset + size > len(view):
            return False
        data = view[offset : offset + size]
        try:
            return blake3.blake3(data).hexdigest() == oid
        finally:
            data.release()


def verify(repo: DataRepo, workspace: bool = False, repair: bool = True) -> tuple[int, list[VerifyProblem]]:
    """Re-hash the cached objects of every tracked path: ``(objects checked, problems)``.

    With ``workspace`` the workspace files are re-hashed too (ignoring the stat cache)
    and compared with their pointers. With ``repair`` corrupt objects are fetched
    again from the default remote when it has them.
    """
    problems: list[VerifyProblem] = []
    checked: set[str] = set()

    def check(oid: str, path: str) -> None:
        if oid in checked:
            return
        checked.add(oid)
        if not repo.has(oid):
            problems.append(VerifyProblem(path, oid, "missing"))
            return
        got, st = files_.hash_large(str(repo.cache.path(oid)), oid)
        if got == oid:
            repo.state.set_checked([(oid, st.st_ino, st.st_size, st.st_mtime_ns)])
            return
        fixed = repair and repo.refetch([oid], quiet=True)
        problems.append(VerifyProblem(path, oid, "corrupt", repaired=fixed))

    for tracked in repo.select(None):
        pointer = tracked.pointer
        check(pointer.oid, tracked.data_path)
        if pointer.is_dir and repo.has(pointer.oid):
            try:
                tree = repo.load_tree(pointer.oid, tracked.data_path, fetch=False)
            except KeelError:
                continue
            for e in tree.entries:
                check(e.object_oid, f"{tracked.data_path}/{e.path}")
            bad_packs = {p.oid for p in problems if p.problem == "corrupt" and not p.repaired}
            for e in tree.entries:
                if e.pack in bad_packs and not _slice_ok(repo, e.pack, e.offset, e.size, e.oid):
                    problems.append(VerifyProblem(f"{tracked.data_path}/{e.path}", e.oid, "corrupt"))
        if workspace:
            state = _status_one(repo, tracked, rehash=True)
            for name in state.changes.modified + state.changes.removed:
                problems.append(VerifyProblem(name, "", "modified" if name in state.changes.modified else "missing"))
    return len(checked), problems
