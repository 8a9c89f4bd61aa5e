"""``keel data checkout``: make the workspace match its pointer files.

For every tracked path the workspace is compared with the pointer's version
(the stat cache answers for unchanged files). Files that differ are replaced,
files the version does not have are removed, and nothing else is touched.

Safety: a workspace file about to be replaced or removed whose content is not
in the cache (a change never added) stops the checkout before anything is
changed, naming the files, unless ``force``. A file that replaces another is
written to a temporary name and renamed into place, so an interrupted checkout
leaves it either old or new, never half-written. A file where nothing is (the
usual case after ``rm -r`` or a fresh clone) is created in place, one directory
operation instead of two; the tracked paths about to change and the files about
to be created are listed first in ``.keel/data/checkout.journal`` (removed when
the checkout ends), so a checkout after an interrupted one overwrites what it
may have left half-written instead of taking it for a change of the user's, and
``status`` reports those paths as modified until then. Every checkout of a
folder removes the empty folders in it that no file of the version is in (what
a killed checkout, or a removal, leaves): ``rmdir`` only, never a file.

Modes: a file is created with what the umask makes of 666, or of 777 where the
version records it executable (:func:`~keel.services.data_files.file_mode`); a
file whose bytes are right but whose executable bit is not has the bit set or
cleared in place (a hard-linked one is copied first: it shares its mode with the
cache object). An executable loose object is never hard-linked.

How files are materialised (``link``: ``auto`` | ``reflink`` | ``hardlink`` | ``copy``):

- loose objects (files of 256 KiB and more): a reflink where the file system
  supports it, else a hard link to the cache object (read-only: an in-place
  edit would corrupt the cache; ``keel data unprotect PATH`` makes a writable
  copy), else a copy (``copy_file_range``);
- packed small files: written from the pack (memory-mapped: no read call and no
  copy per file), each checked against its hash, by two threads (file creation
  is kernel work, done without the GIL).

A cache object found corrupt is fetched again from the default remote when
there is one, else the checkout stops with an IntegrityError naming the path.

Containment: every file written goes through one
:class:`~keel.services.destination.Destination` of the workspace, before the
first write: tree paths were checked when the tree was read (no ``..``, no
absolute path), and no symlink may stand on the way (the tracked folder
itself, a folder above or inside it, or where a file goes), ``force`` or not.
Each folder is looked at once, not once per file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import blake3

from keel.core.data_tree import TreeEntry
from keel.core.progress import Meter, Progress, meter
from keel.errors import IntegrityError, InvalidInput, NotFound
from keel.objects.packs import mapped
from keel.services import data_files as files_
from keel.services.data import DataRepo, Tracked, conflict, trusted
from keel.services.data_config import check_link_mode
from keel.services.data_files import FileStat, os_error
from keel.services.data_workspace import JOURNAL, read_journal
from keel.services.destination import Destination

__all__ = ["CheckoutResult", "checkout", "unprotect"]

_FORCE_HINT = "add them first (keel data add PATH) to keep them, or pass --force to discard them"
_LINK_HINT = (
    "keel never writes data through a symlink, even with --force: remove the link "
    "(or move what it points at into the workspace) and run the command again"
)


@dataclass
class CheckoutResult:
    """What a checkout changed."""

    written: int = 0
    removed: int = 0
    unchanged: int = 0
    modes: dict[str, int] = field(default_factory=dict)  # how written files were made: link mode -> count
    paths: list[str] = field(default_factory=list)  # tracked paths that changed
    missing: list[str] = field(default_factory=list)  # tracked paths whose version is not in the cache
    mode_changed: int = 0  # files whose bytes were right and whose executable bit was set or cleared
    folders_removed: int = 0  # empty folders no file of the version needs (e.g. left by a killed checkout)
    warnings: list[str] = field(default_factory=list)  # e.g. a .dvc file that names other data

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


@dataclass
class _Plan:
    """The work for one tracked path, decided before anything is touched."""

    tracked: Tracked
    write: list[TreeEntry] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)  # absolute paths of files to delete
    remove_dir: str | None = None  # a folder to delete where a file goes
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)
    known: list[tuple[str, int, int, int, str]] = field(default_factory=list)  # stat rows learned
    existing: set[str] = field(default_factory=set)  # workspace paths of the files found there
    executable: set[str] = field(default_factory=set)  # workspace paths the version has executable
    chmod: list[tuple[str, bool]] = field(default_factory=list)  # (path, executable): right bytes, wrong mode
    empty: list[str] = field(default_factory=list)  # absolute paths of empty folders found in the folder
    needed: set[str] = field(default_factory=set)  # absolute paths of the folders the version's files are in

    @property
    def has_work(self) -> bool:
        """True if applying the plan changes anything."""
        return bool(self.write or self.remove or self.remove_dir or self.chmod or self.empty)


def checkout(
    repo: DataRepo,
    paths: Sequence[str | os.PathLike[str]] | None = None,
    force: bool = False,
    link: str | None = None,
    progress: Progress | None = None,
) -> CheckoutResult:
    """Make the workspace match the pointer files of ``paths`` (default: all).

    ``progress(done, total)`` counts the files written, once the plan is made."""
    mode = files_.effective_mode(check_link_mode(link or repo.config.link), repo.tmp)
    result = CheckoutResult()
    with repo.locked():
        journal = repo.data_dir / JOURNAL
        interrupted, roots_interrupted = read_journal(journal)
        plans: list[_Plan] = []
        destination = Destination(repo.root, "data path")
        selected = repo.select(paths)
        for tracked in selected:
            try:
                plans.append(_plan(repo, tracked, destination, interrupted))
            except NotFound:
                result.missing.append(tracked.data_path)
        conflicts = [c for p in plans for c in p.conflicts]
        result.warnings += pointer_disagreements(repo, selected, force)
        if conflicts and not force:
            hint = _FORCE_HINT + "".join(f"; note: {w}" for w in result.warnings[:1])  # (dvc add ran, say)
            raise conflict(conflicts, "checkout would overwrite changes that are not in the cache", hint)
        counter = meter(progress, sum(len(p.write) for p in plans))
        created = sorted(interrupted | {e.path for p in plans for e in p.write if e.path not in p.existing})
        roots = sorted(roots_interrupted | {p.tracked.data_path for p in plans if p.has_work})
        if created or roots:
            _write_journal(journal, created, roots)
        umask = files_.current_umask()
        for plan in plans:
            if plan.known:
                repo.state.save_stats(plan.known)
            result.unchanged += plan.unchanged
            if plan.has_work:
                _apply(repo, plan, mode, umask, result, counter)
                if plan.write or plan.remove or plan.remove_dir or plan.chmod:
                    result.paths.append(plan.tracked.data_path)
        counter.close()
        if created or roots or interrupted or roots_interrupted:
            # What this checkout did not look at stays listed (an interrupted checkout of other paths).
            done = [p.tracked.data_path for p in plans]
            left = sorted(x for x in interrupted if not _under(x, done))
            left_roots = sorted(x for x in roots_interrupted if not _under(x, done))
            if left or left_roots:
                _write_journal(journal, left, left_roots)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(journal)
    if result.missing:
        raise NotFound(
            f"not in the cache, so not checked out: {', '.join(result.missing)}",
            "run 'keel data pull' (or 'keel data fetch') to get them from a remote",
        )
    return result


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def pointer_disagreements(repo: DataRepo, selected: Sequence[Tracked], force: bool = False) -> list[str]:
    """Warnings for tracked paths whose pointer another tool's file (a ``.dvc`` file after
    ``dvc add``) contradicts; with ``force`` each says that keel's pointer is what a
    checkout restores."""
    from keel.services.data_history import sources_for

    warnings: list[str] = []
    for source in sources_for(repo.root):
        for found in source.disagreements(repo, list(selected)):
            text = found.message()
            if force:
                text += f"; checkout --force restores keel's version ({found.keel_file})"
            warnings.append(text)
    return warnings


def _write_journal(path: Any, paths: list[str], roots: list[str]) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join([*("/" + r for r in roots), *paths]) + "\n")
    except OSError as exc:
        raise os_error(exc, f"cannot write {path}") from exc


def _plan(repo: DataRepo, tracked: Tracked, destination: Destination, interrupted: set[str] | None = None) -> _Plan:
    plan = _Plan(tracked)
    pointer = tracked.pointer
    rel = tracked.data_path
    absolute = repo.abs(rel)
    if os.path.islink(absolute):
        raise InvalidInput(f"{rel} is a symlink: checking it out would write through it", _LINK_HINT)
    destination.check([rel], files=False)  # and no link in the folders above it
    if pointer.is_dir:
        tree = repo.load_tree(pointer.oid, rel)
        wanted = {rel + "/" + e.path: e for e in tree.entries}
        plan.executable = {rel + "/" + p for p in tree.executable}
    else:
        if not repo.has(pointer.oid):
            repo.refetch([pointer.oid], quiet=True)
            if not repo.has(pointer.oid):
                raise NotFound(f"{rel} is not in the cache")
        wanted = {rel: TreeEntry(rel, pointer.oid, pointer.size)}
        plan.executable = {rel} if pointer.executable else set()
    found: list[FileStat] = []
    other: list[str] = []
    if os.path.isdir(absolute):
        found, other = files_.walk(absolute, rel, plan.empty if pointer.is_dir else None)
        if other:
            plan.conflicts += other  # symlinks or sockets where data goes: never deleted silently
        if not pointer.is_dir:
            plan.remove_dir = absolute
    elif os.path.lexists(absolute):
        st = os.lstat(absolute)
        if not os.path.isfile(absolute):
            plan.conflicts.append(rel)
        else:
            # (removed below if a folder goes there)
            found = [FileStat(rel, absolute, st.st_ino, st.st_size, st.st_mtime_ns, files_.is_executable(st.st_mode))]
    cached = repo.state.stats_under(rel) if found else {}  # (nothing there: nothing to look up)
    present = {f.rel: f for f in found}
    plan.existing = set(present)
    unknown: list[FileStat] = []  # files whose content must be hashed to decide
    current: dict[str, str] = {}
    for f in found:
        row = cached.get(f.rel)
        if trusted(row, f):
            current[f.rel] = row[3]  # type: ignore[index]
        else:
            unknown.append(f)
    if unknown:
        current.update(repo.current_oids(unknown, cached))
    new = tuple.__new__  # entry._replace(path=path), without the Python-level overhead
    executable = plan.executable
    for path, entry in wanted.items():
        have = current.get(path)
        if have == entry.oid:
            if (path in executable) != present[path].executable:
                plan.chmod.append((path, path in executable))
            else:
                plan.unchanged += 1
        else:
            plan.write.append(new(TreeEntry, (path, entry.oid, entry.size, entry.pack, entry.offset)))
    gone = sorted(p for p in present if p not in wanted)
    if plan.empty:  # (rare: only then are the version's folders listed)
        root = str(repo.root)
        needed: set[str] = set()
        for path in wanted:
            folder = path.rpartition("/")[0]
            while folder and folder not in needed:
                needed.add(folder)
                folder = folder.rpartition("/")[0]
        plan.needed = {f"{root}/{f}" for f in needed}
        plan.empty = [f for f in plan.empty if f not in plan.needed]
    if plan.write:
        # Before anything is written: no symlink in a folder on the way (each folder looked
        # at once), nor where a file goes (the walk above saw every link under the folder).
        destination.check([e.path for e in plan.write], files=False, removed=set(gone))
        links = [o for o in other if o in wanted and os.path.islink(repo.abs(o))]
        if links:
            shown = ", ".join(links[:5]) + (f" and {len(links) - 5} more" if len(links) > 5 else "")
            raise InvalidInput(f"{rel}: symlinks stand where data goes: {shown}", _LINK_HINT)
    replaced = {path for path in current if path not in wanted or current[path] != wanted[path].oid}
    for path in gone:
        plan.remove.append(present[path].path)
    if replaced:
        safe = repo.content_known({current[p] for p in replaced})
        # A file an interrupted checkout was creating may be half-written: it is not the user's.
        left = interrupted or set()
        plan.conflicts += sorted(p for p in replaced if current[p] not in safe and p not in left)
    return plan


def _apply(repo: DataRepo, plan: _Plan, mode: str, umask: int, result: CheckoutResult, counter: Meter) -> None:
    rel = plan.tracked.data_path
    executable = plan.executable
    try:
        if plan.remove_dir:
            _rmtree(plan.remove_dir)
        for path in plan.remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if plan.remove:
            _prune_empty(repo, rel, plan.remove)
        if plan.empty:  # (before the writes: an empty folder where a file goes is out of the way)
            result.folders_removed += _prune_folders(repo.abs(rel), plan.empty, plan.needed)
        loose = [e for e in plan.write if not e.pack]
        packed: dict[str, list[TreeEntry]] = {}
        for e in plan.write:
            if e.pack:
                packed.setdefault(e.pack, []).append(e)
        folders: set[str] = set()
        for e in plan.write:
            folder = e.path.rpartition("/")[0]
            if folder and folder not in folders:
                os.makedirs(repo.abs(folder), exist_ok=True)
                folders.add(folder)
        recorded: list[tuple[str, int, int, int, str]] = []
        start = time.time_ns()
        for e in loose:
            recorded.append(_write_loose(repo, e, mode, e.path in executable, umask, result))
            counter.add(1)
        if packed:
            existing = plan.existing
            # Each pack's files in slices, the slices shared by _WRITERS threads: balanced however
            # many packs there are (a pack holds up to ~32 MiB: thousands of small files).
            jobs = []
            for pack, entries in packed.items():
                entries.sort(key=lambda x: x.offset)
                step = max(256, -(-len(entries) // (2 * _WRITERS)))
                jobs += [(pack, entries[i : i + step]) for i in range(0, len(entries), step)]
            if len(jobs) == 1:
                recorded += _write_pack(repo, jobs[0][0], jobs[0][1], existing, executable)
                counter.add(len(jobs[0][1]))
            else:
                with ThreadPoolExecutor(min(_WRITERS, len(jobs))) as pool:
                    work = pool.map(lambda job: _write_pack(repo, job[0], job[1], existing, executable), jobs)
                    for rows in work:
                        recorded += rows
                        counter.add(len(rows))  # counted here, on one thread, a slice at a time
            result.modes["copy"] = result.modes.get("copy", 0) + sum(len(v) for v in packed.values())
        for path, want in plan.chmod:
            row = _set_mode(repo, path, want, umask)
            if row is not None:
                recorded.append(row)
        repo.state.save_stats(recorded, start)
        if plan.remove:
            repo.state.forget_stats([repo.rel(p) for p in plan.remove])
    except OSError as exc:
        raise os_error(exc, f"cannot check out {rel}") from exc
    result.written += len(plan.write)
    result.removed += len(plan.remove)
    result.mode_changed += len(plan.chmod)


def _set_mode(repo: DataRepo, path: str, executable: bool, umask: int) -> tuple[str, int, int, int, str] | None:
    """Give the file at workspace ``path`` (whose bytes are right) the executable bit the
    version records. A file hard-linked to the cache shares its mode with the cache
    object, so it is replaced by a copy instead; returns the copy's stat row then."""
    absolute = repo.abs(path)
    st = os.lstat(absolute)
    if st.st_nlink == 1:
        files_.set_executable(absolute, st.st_mode, executable, umask)
        return None
    tmp = files_.tmp_name(repo.tmp)
    try:
        files_.copy_file(absolute, tmp)
        os.chmod(tmp, files_.file_mode(executable, umask))
        new = os.stat(tmp)
        os.replace(tmp, absolute)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    cached = repo.state.stats_under(path).get(path)
    if cached is None:
        return None
    return (path, new.st_ino, new.st_size, new.st_mtime_ns, cached[3])


def _prune_folders(top: str, empty: list[str], needed: set[str]) -> int:
    """Remove the empty folders ``empty`` found below ``top`` (the tracked folder), and the
    folders above them that this leaves empty, up to ``top`` (kept) or a folder the
    version's files are in (``needed``). Versions hold files: an empty folder no file
    needs is what an interrupted checkout (or a removal) left. Only ``rmdir``: a folder
    with anything in it is never touched. Returns how many were removed."""
    removed = 0
    for folder in sorted(empty, key=len, reverse=True):
        while folder.startswith(top + os.sep) and folder not in needed:
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass  # (removed already, through a folder below it)
            except OSError:
                break  # not empty (the version has files there) or not ours to remove
            else:
                removed += 1
            folder = os.path.dirname(folder)
    return removed


def _rmtree(path: str) -> None:
    def onerror(func: Any, target: str, _exc: Any) -> None:
        os.chmod(os.path.dirname(target), 0o755)
        func(target)

    shutil.rmtree(path, onerror=onerror)


def _prune_empty(repo: DataRepo, rel: str, removed: list[str]) -> None:
    top = repo.abs(rel)
    for folder in sorted({os.path.dirname(p) for p in removed}, key=len, reverse=True):
        while folder.startswith(top) and folder != os.path.dirname(top):
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)


def _object_ok(repo: DataRepo, oid: str) -> bool:
    """True if cache object ``oid`` is known good (unchanged since it was verified), else
    verify it now by hash."""
    path = repo.cache.path(oid)
    st = os.stat(path)
    if repo.state.checked(oid) == (st.st_ino, st.st_size, st.st_mtime_ns):
        return True
    got, st = files_.hash_large(str(path), oid)
    if got != oid:
        return False
    repo.state.set_checked([(oid, st.st_ino, st.st_size, st.st_mtime_ns)])
    return True


def _write_loose(
    repo: DataRepo, e: TreeEntry, mode: str, executable: bool, umask: int, result: CheckoutResult
) -> tuple[str, int, int, int, str]:
    if not repo.has(e.oid):
        repo.refetch([e.oid])
    if not _object_ok(repo, e.oid) and not (repo.refetch([e.oid], quiet=True) and _object_ok(repo, e.oid)):
        raise IntegrityError(
            f"the cached content of {e.path} ({e.oid[:12]}) is corrupt and no remote has a good copy",
            "restore it from a backup; 'keel data verify' lists every corrupt object",
        )
    tmp = files_.tmp_name(repo.tmp)
    if executable and mode == "hardlink":
        mode = "copy"  # a hard link shares its mode with the (read-only, 444) cache object
    try:
        used = files_.link_into(str(repo.cache.path(e.oid)), tmp, mode)
        if used != "hardlink":
            os.chmod(tmp, files_.file_mode(executable, umask))
        st = os.stat(tmp)
        os.replace(tmp, repo.abs(e.path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    result.modes[used] = result.modes.get(used, 0) + 1
    return (e.path, st.st_ino, st.st_size, st.st_mtime_ns, e.oid)


_WRITERS = 2  # threads writing small files: their time is the kernel's (creating inodes), not the GIL's


def _write_pack(
    repo: DataRepo, pack: str, entries: list[TreeEntry], existing: set[str], executable: set[str]
) -> list[tuple[str, int, int, int, str]]:
    try:
        return _extract(repo, pack, entries, existing, executable)
    except IntegrityError:
        if not repo.refetch([pack], quiet=True):
            raise
        return _extract(repo, pack, entries, existing, executable)


def _corrupt_in_pack(e: TreeEntry, pack: str) -> IntegrityError:
    return IntegrityError(
        f"the cached content of {e.path} is corrupt (pack {pack[:12]})",
        "restore it from a remote ('keel data pull'); 'keel data verify' lists corrupt objects",
    )


def _extract(
    repo: DataRepo, pack: str, entries: list[TreeEntry], existing: set[str], executable: set[str]
) -> list[tuple[str, int, int, int, str]]:
    """Write ``entries`` (files of ``pack``) into the workspace, each checked against its hash:
    created in place where nothing is (``existing``: the paths where a file is), else written
    to a temporary file renamed over the old one. A new file's mode is what the umask makes
    of 666, or of 777 for the paths in ``executable``."""
    rows = []
    root = str(repo.root)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    prefix = f"{repo.tmp}/{os.getpid()}-{pack[:16]}-{entries[0].offset if entries else 0}-"
    path = repo.cache.path(pack)
    if not path.exists():
        repo.refetch([pack])
    with mapped(path) as view:
        length = len(view)
        b3, write, fstat, close, rename = blake3.blake3, os.write, os.fstat, os.close, os.rename
        for i, e in enumerate(entries):
            if e.offset + e.size > length:
                raise _corrupt_in_pack(e, pack)
            data = view[e.offset : e.offset + e.size]
            try:
                if b3(data).hexdigest() != e.oid:
                    raise _corrupt_in_pack(e, pack)
                target = f"{root}/{e.path}"
                tmp = None
                perm = 0o777 if e.path in executable else 0o666  # (less the umask)
                try:
                    fd = os.open(target, flags, perm) if e.path not in existing else -1
                except FileExistsError:  # something appeared there since the plan: replace it
                    fd = -1
                if fd < 0:
                    tmp = f"{prefix}{i}"
                    fd = os.open(tmp, flags, perm)
                try:
                    done = write(fd, data) if e.size else 0
                    while done < e.size:  # a short write: finish it
                        done += write(fd, data[done:])
                    st = fstat(fd)
                finally:
                    close(fd)
            finally:
                data.release()  # (the map closes only when no slice of it is left)
            if tmp is not None:
                rename(tmp, target)
            rows.append((e.path, st.st_ino, st.st_size, st.st_mtime_ns, e.oid))
    return rows


def unprotect(repo: DataRepo, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Replace linked (read-only) files under tracked ``paths`` with writable copies,
    so they can be edited in place; returns the workspace paths changed."""
    changed: list[str] = []
    umask = files_.current_umask()
    with repo.locked():
        for path in paths:
            rel = repo.rel(path)
            absolute = repo.abs(rel)
            if not os.path.exists(absolute):
                raise NotFound(f"{path} does not exist", "check the path ('keel data checkout' restores it)")
            if os.path.islink(absolute):
                raise InvalidInput(f"{path} is a symlink: unprotect would write through it", _LINK_HINT)
            if os.path.isdir(absolute):
                found, _ = files_.walk(absolute, rel)
            else:
                st = os.lstat(absolute)
                found = [FileStat(rel, absolute, st.st_ino, st.st_size, st.st_mtime_ns)]
            rows = []
            cached = repo.state.stats_under(rel)
            for f in found:
                st = os.lstat(f.path)
                if st.st_nlink == 1 and os.access(f.path, os.W_OK) and st.st_mode & 0o200:
                    continue
                tmp = files_.tmp_name(repo.tmp)
                try:
                    files_.copy_file(f.path, tmp)
                    os.chmod(tmp, files_.file_mode(files_.is_executable(st.st_mode), umask))  # keeps +x
                    new = os.stat(tmp)
                    os.replace(tmp, f.path)
                except OSError as exc:
                    raise os_error(exc, f"cannot unprotect {f.rel}") from exc
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                row = cached.get(f.rel)
                if row is not None and trusted(row, f):
                    rows.append((f.rel, new.st_ino, new.st_size, new.st_mtime_ns, row[3]))
                changed.append(f.rel)
            if rows:
                repo.state.save_stats(rows)
    return changed
