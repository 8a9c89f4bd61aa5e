"""Import a DVC repository's data into ``keel data``, history included.

``keel import dvc`` runs in a DVC repository that is also the keel workspace
(``keel init`` in its root). It reads, with the real ``git`` and without DVC
(see :mod:`.dvc_files`):

1. every version of every ``.dvc`` file and ``dvc.lock`` that a commit
   introduced (all branches and tags, or the ``revs`` given), plus the
   working tree's;
2. checks that the DVC cache holds every version they name (a missing one
   stops the import before anything is written, naming path, commit and md5);
3. stores each version in keel's object store (a file as one object, a folder
   as a tree, as ``keel data add`` would), checking each file's md5, and lists
   ``md5 -> keel oid`` in the import ledger;
4. registers a dataset version per (path, version) with the commit that
   introduced it (``keel data log PATH`` shows the DVC history);
5. writes a ``PATH.keel`` pointer (and the ``.gitignore`` entry) for every
   output the working tree's DVC files track, unless one is there.

After the user commits the pointers, keel tracks the data. At a commit made
before (``git checkout v1.0``), ``keel data checkout`` reads the ``.dvc``
files there and finds their versions through the ledger
(:func:`.dvc_files.dvc_tracked`); gc with ``--all-commits`` keeps them.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from keel.core.data_pointer import POINTER_SUFFIX, Pointer
from keel.core.data_tree import PACK_MAX_FILE
from keel.errors import IntegrityError, InvalidInput, NotFound, NoWorkspace
from keel.services import data_files as files_
from keel.services.data import DataRepo
from keel.services.data_config import find_root
from keel.services.data_files import FileStat
from keel.services.data_git import head_commit, is_git_repo
from keel.services.data_versions import register_with
from keel.services.destination import Destination
from keel.services.importers.dvc_files import (
    DvcOut,
    cache_dir,
    cache_path,
    history_outs,
    md5_of,
    read_dir_entries,
    worktree_outs,
)
from keel.services.importers.ledger import ImportSummary, Ledger, Progress
from keel.services.workspace import Store

__all__ = ["DvcImporter", "check_repo", "import_dvc"]

_FETCH = (
    "fetch it into the DVC cache first ('dvc fetch --all-commits' or 'dvc pull'), or import fewer revisions (--rev)"
)


@dataclass(frozen=True)
class _Version:
    """One DVC version to store: an out's md5 and where its bytes are in the cache."""

    out: DvcOut
    commit: str
    # (relpath in the folder, cache file, md5, isexec); one ("", path, md5, isexec) for a file
    files: tuple[tuple[str, Path, str, bool], ...]


def check_repo(repo: str | os.PathLike[str] | None = None) -> Path:
    """The root of the DVC repository ``repo`` (default: here), which must also be the keel
    workspace's root; InvalidInput otherwise."""
    root = Path(repo or os.getcwd()).expanduser().resolve()
    if not (root / ".dvc").is_dir():
        raise InvalidInput(f"{root} is not a DVC repository (no .dvc/ folder)", "give its root: --repo PATH")
    try:
        keel_root = find_root(root)
    except NoWorkspace:
        raise NoWorkspace(f"the DVC repository {root} is not a keel workspace", f"run 'keel init' in {root}") from None
    if keel_root.resolve() != root:
        raise InvalidInput(
            f"the DVC repository {root} is not the root of the keel workspace ({keel_root})",
            f"run 'keel init' in {root}, then import from there",
        )
    return root


class DvcImporter:
    """One import of one DVC repository into the keel workspace at its root."""

    def __init__(
        self, store: Store, repo: str | os.PathLike[str] | None = None, revs: list[str] | None = None,
        progress: Progress | None = None,
    ) -> None:  # fmt: skip
        root = check_repo(repo)
        if revs and not is_git_repo(root):
            raise InvalidInput(f"--rev needs git history, and {root} is not in a git repository", "drop --rev")
        self.root = root
        self.store = store
        self.revs = revs or None
        self.cache = cache_dir(root)
        self.ledger = Ledger(store, "dvc")
        self.summary = ImportSummary("dvc", str(root))
        self.progress = progress

    def run(self) -> ImportSummary:
        """Import; return the counts."""
        history = history_outs(self.root, self.revs) if is_git_repo(self.root) else []
        current = worktree_outs(self.root)
        head = head_commit(self.root)
        seen: dict[str, tuple[DvcOut, str]] = {}
        for out, commit in [*history, *((o, head) for o in current)]:
            seen.setdefault(out.md5, (out, commit))
        known = self.ledger.details("object", seen)
        versions = self._locate([seen[md5] for md5 in seen if md5 not in known])  # raises before any write
        self.summary.count("version", False, len(known))
        with DataRepo(self.root) as repo, repo.locked():  # no gc or checkout meanwhile
            total = len(versions)
            if self.progress is not None:
                self.progress(0, total)
            for done, version in enumerate(versions, 1):
                pointer = self._store(repo, version)
                detail = {"kind": pointer.kind, "size": pointer.size, "files": pointer.files}
                self.ledger.record("object", version.out.md5, pointer.oid, str(self.root), detail)
                known[version.out.md5] = (pointer.oid, detail)
                self.summary.count("version", True)
                self.summary.count("file", True, len(version.files))
                if self.progress is not None:
                    self.progress(done, total)
            self._register(history, current, head, known)
            self._write_pointers(repo, current, known)
        return self.summary

    def _locate(self, wanted: list[tuple[DvcOut, str]]) -> list[_Version]:
        """The cache files of each version; NotFound naming every missing one."""
        missing: list[str] = []
        versions: list[_Version] = []
        for out, commit in wanted:
            where = f"{out.path} ({out.declared_in} at {commit[:8] or 'the working tree'}, md5 {out.md5})"
            path = cache_path(self.cache, out.md5, out.legacy)
            if not out.is_dir:
                if path.is_file():
                    versions.append(_Version(out, commit, (("", path, out.md5, out.isexec),)))
                else:
                    missing.append(where)
                continue
            if not path.is_file():
                missing.append(where)
                continue
            entries = []
            absent = 0
            for rel, md5, isexec in read_dir_entries(path, out.md5):
                file = cache_path(self.cache, md5, out.legacy)
                if file.is_file():
                    entries.append((rel, file, md5, isexec))
                else:
                    absent += 1
            if absent:
                missing.append(f"{where}: {absent} of its files")
            else:
                versions.append(_Version(out, commit, tuple(entries)))
        if missing:
            shown = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise NotFound(f"not in the DVC cache {self.cache}, so nothing was imported: {shown}", _FETCH)
        return versions

    def _stat(self, rel: str, path: Path, md5: str, legacy: bool, isexec: bool = False) -> FileStat:
        """The cache file, its md5 checked (DVC's cache can be damaged like any other);
        executable as DVC recorded it (``isexec``), not as the read-only cache file is."""
        if md5 not in md5_of(path, legacy):
            raise IntegrityError(
                f"the DVC cache file {path} does not match its md5 {md5}", "fetch it again: dvc fetch --all-commits"
            )
        st = os.stat(path)
        return FileStat(rel, str(path), st.st_ino, st.st_size, st.st_mtime_ns, isexec)

    def _store(self, repo: DataRepo, version: _Version) -> Pointer:
        out = version.out
        name = posixpath.basename(out.path)
        if not out.is_dir:
            _, path, md5, _isexec = version.files[0]
            f = self._stat(out.path, path, md5, out.legacy)
            if f.size < PACK_MAX_FILE:
                oid = repo.put_object(files_.read_small(f))
            else:
                oid, _ = repo.store_large(f, "copy")
            repo.record_objects([(oid, "loose")])
            return Pointer("file", name, oid, f.size)
        stats = [self._stat(rel, path, md5, out.legacy, isexec) for rel, path, md5, isexec in version.files]
        tree_oid, _tree, _written = repo.store_tree(stats)
        return Pointer("dir", name, tree_oid, sum(f.size for f in stats), len(stats))

    def _register(
        self,
        history: list[tuple[DvcOut, str]],
        current: list[DvcOut],
        head: str,
        known: dict[str, tuple[str, dict[str, object]]],
    ) -> None:
        """A dataset version per (path, version), with the commit that introduced it."""
        rows = []
        for out, commit in [*history, *((o, head) for o in current)]:
            oid, detail = known[out.md5]
            kind = str(detail.get("kind", "dir" if out.is_dir else "file"))
            rows.append(
                (out.path, oid, kind, int(str(detail.get("size", 0))), int(str(detail.get("files", 1))), commit)
            )
        unique = list({(r[0], r[1]): r for r in reversed(rows)}.values())  # the first commit wins
        register_with(self.store, unique)

    def _write_pointers(
        self, repo: DataRepo, current: list[DvcOut], known: dict[str, tuple[str, dict[str, object]]]
    ) -> None:
        # Paths from the repository's DVC files: no symlink on the way to a pointer file (the
        # files' own paths were checked when they were parsed), before the first write.
        Destination(self.root, "DVC output").check([out.path + POINTER_SUFFIX for out in current])
        for out in current:
            pointer_rel = out.path + POINTER_SUFFIX
            if (self.root / pointer_rel).exists():
                self.summary.count("pointer file", False)
                continue
            oid, detail = known[out.md5]
            pointer = Pointer("dir" if out.is_dir else "file", posixpath.basename(out.path), oid,
                              int(str(detail.get("size", 0))), int(str(detail.get("files", 1))),
                              out.isexec)  # fmt: skip
            (self.root / pointer_rel).parent.mkdir(parents=True, exist_ok=True)
            repo.write_pointer(pointer_rel, pointer)
            folder, name = os.path.split(repo.abs(out.path))
            files_.ensure_gitignored(Path(folder), name)
            self.summary.count("pointer file", True)


def import_dvc(
    store: Store, repo: str | os.PathLike[str] | None = None, revs: list[str] | None = None,
    progress: Progress | None = None,
) -> ImportSummary:  # fmt: skip
    """Import the data of the DVC repository ``repo`` (default: here) and its history
    (every commit, or ``revs``) into keel data. Idempotent and resumable."""
    return DvcImporter(store, repo, revs, progress).run()
