"""DVC's own files, read without DVC: ``.dvc`` files, ``dvc.lock``, the cache, git history.

A ``.dvc`` file (YAML) lists ``outs``, each with ``path`` (relative to the
file's folder), ``md5`` (``<hex>.dir`` for a folder), ``size``, ``nfiles``
and, since DVC 3, ``hash: md5`` (and ``isexec: true`` for an executable
file, which keel keeps as the executable bit: see docs/data.md). ``dvc.lock`` lists the ``outs`` of each
pipeline stage the same way (paths relative to its folder).

The cache holds a file version at ``files/md5/<2 hex>/<30 hex>`` (DVC 3) or
``<2 hex>/<30 hex>`` (DVC 2, outs without ``hash: md5``); a folder version's
``.dir`` object is a JSON list of ``{"md5", "relpath"}`` (with ``"isexec": true``
where DVC recorded one), one per file. The
cache folder is ``.dvc/cache`` unless ``[cache] dir`` in ``.dvc/config`` (or
``config.local``) says otherwise.

Also here: what ``keel data`` needs at a commit that only has ``.dvc`` files
(:func:`dvc_tracked`, :func:`dvc_history_pointers`), resolved through the import
ledger; :mod:`.dvc_hook` registers them as a history source of data versioning.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.checks import relative_path_problem, short
from keel.core.data_pointer import POINTER_SUFFIX, Pointer
from keel.core.yaml_safe import load_yaml
from keel.errors import InvalidInput, KeelError, NotFound

if TYPE_CHECKING:
    from keel.services.data_history import Disagreement
    from keel.services.data_workspace import Tracked, Workspace
    from keel.services.workspace import Store

__all__ = [
    "DvcOut",
    "cache_dir",
    "dvc_disagreements",
    "cache_path",
    "dvc_history_pointers",
    "dvc_tracked",
    "history_outs",
    "md5_of",
    "parse_outs",
    "read_dir_entries",
    "read_dir_manifest",
    "worktree_outs",
]

DVC_SUFFIX = ".dvc"
LOCK_NAME = "dvc.lock"


@dataclass(frozen=True)
class DvcOut:
    """One output DVC tracks: a data path (relative to the repository) at one version."""

    path: str
    md5: str  # "<hex>" or "<hex>.dir"
    size: int
    nfiles: int
    legacy: bool  # DVC 2 hashing and cache layout (no 'hash: md5')
    declared_in: str  # the .dvc file or dvc.lock that lists it
    isexec: bool = False  # DVC's executable flag (a file's; a folder's files carry their own)

    @property
    def is_dir(self) -> bool:
        """True for a folder (its md5 names a ``.dir`` manifest)."""
        return self.md5.endswith(".dir")


def parse_outs(text: str | bytes, declared_in: str) -> list[DvcOut]:
    """The outs of a ``.dvc`` file or ``dvc.lock`` (``declared_in``: its path in the repository)."""
    doc = load_yaml(text, declared_in)
    if not isinstance(doc, dict):
        raise InvalidInput(f"{declared_in} is not a DVC file", "a .dvc file is YAML with an 'outs' list")
    if posixpath.basename(declared_in) == LOCK_NAME:
        stages = doc.get("stages") or {}
        raw = [out for stage in stages.values() if isinstance(stage, dict) for out in stage.get("outs") or []]
    else:
        raw = doc.get("outs") or []
    folder = posixpath.dirname(declared_in)
    outs = []
    for out in raw:
        if not isinstance(out, dict) or not out.get("md5") or not out.get("path"):
            continue  # not cached (cache: false) or not committed yet: nothing to import
        md5 = str(out["md5"])
        path = posixpath.normpath(posixpath.join(folder, str(out["path"])))
        problem = relative_path_problem(path, 4096)
        if problem is not None or path.split("/")[0] in (".git", ".keel", ".dvc"):
            raise InvalidInput(
                f"{declared_in} tracks {short(str(out['path']))}, outside the repository's data "
                f"({'the path ' + problem if problem else 'a folder of git, keel or DVC'})",
                "keel imports data inside the repository, outside .git/, .keel/ and .dvc/",
            )
        outs.append(
            DvcOut(
                path=path,
                md5=md5,
                size=int(out.get("size") or 0),
                nfiles=int(out.get("nfiles") or (0 if md5.endswith(".dir") else 1)),
                legacy=out.get("hash") != "md5",
                declared_in=declared_in,
                isexec=out.get("isexec") is True and not md5.endswith(".dir"),
            )
        )
    return outs


def cache_dir(root: Path) -> Path:
    """The DVC cache folder of the repository at ``root``."""
    folder = root / ".dvc" / "cache"
    for name in ("config", "config.local"):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
        configured = parser.get("cache", "dir", fallback=None)
        if configured:
            folder = (root / ".dvc" / configured.strip().strip("'\"")).resolve()
    return folder


def cache_path(cache: Path, md5: str, legacy: bool) -> Path:
    """Where the cache keeps object ``md5`` (``<hex>`` or ``<hex>.dir``)."""
    base = cache if legacy else cache / "files" / "md5"
    return base / md5[:2] / md5[2:]


def md5_of(path: Path, legacy: bool = False) -> set[str]:
    """The md5s DVC may have given the file: of its bytes, and for DVC 2 also of its
    bytes with CRLF turned into LF (DVC 2 did that for text files)."""
    digest = hashlib.md5(usedforsecurity=False)
    unix = hashlib.md5(usedforsecurity=False) if legacy else None
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            if unix is not None:
                unix.update(chunk.replace(b"\r\n", b"\n"))
    return {digest.hexdigest()} | ({unix.hexdigest()} if unix is not None else set())


def read_dir_manifest(path: Path, md5: str) -> list[tuple[str, str]]:
    """``[(relpath, md5)]`` of a ``.dir`` cache object."""
    return [(rel, digest) for rel, digest, _ in read_dir_entries(path, md5)]


def read_dir_entries(path: Path, md5: str) -> list[tuple[str, str, bool]]:
    """``[(relpath, md5, isexec)]`` of a ``.dir`` cache object."""
    try:
        entries: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"DVC folder version {md5} is not in the cache ({path})", _FETCH_HINT) from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"DVC folder manifest {path} is damaged ({exc})", _FETCH_HINT) from None
    if not isinstance(entries, list):
        raise InvalidInput(f"DVC folder manifest {path} is not a list", _FETCH_HINT)
    out = []
    for entry in entries:
        rel = posixpath.normpath(str(entry.get("relpath", ""))) if isinstance(entry, dict) else ""
        if not rel or relative_path_problem(rel, 4096) is not None or not entry.get("md5"):
            raise InvalidInput(f"DVC folder manifest {path} has a bad entry {entry!r}", _FETCH_HINT)
        out.append((rel, str(entry["md5"]), entry.get("isexec") is True))
    return out


_FETCH_HINT = (
    "fetch it into the DVC cache ('dvc fetch --all-commits', or 'dvc pull'), or import fewer revisions (--rev)"
)


def _git_outs(root: Path, blobs: dict[str, str]) -> list[tuple[DvcOut, str]]:
    """The outs of the blobs ``{"commit\\0path": blob}``, each with its commit."""
    from keel.services.data_git import _cat_blobs

    contents = _cat_blobs(root, sorted(set(blobs.values())))
    out: list[tuple[DvcOut, str]] = []
    for key, sha in blobs.items():
        commit, path = key.split("\0", 1)
        out += [(item, commit) for item in parse_outs(contents[sha], path)]
    return out


def history_outs(root: Path, revs: Iterable[str] | None = None) -> list[tuple[DvcOut, str]]:
    """``(out, commit)`` for the DVC files of git history, oldest first: every version of a
    ``.dvc`` file or ``dvc.lock`` that a commit on any branch or tag introduced, or, with
    ``revs``, the ones in those commits' trees."""
    from keel.services.data_git import _git, head_commit, resolve_rev

    commits = [resolve_rev(root, rev) for rev in revs] if revs else []
    if not head_commit(root):
        return []
    blobs: dict[str, str] = {}  # "commit\0path" -> blob
    if commits:
        for commit in commits:
            listing = _git(root, "ls-tree", "-r", "-z", commit).decode("utf-8", "surrogateescape")
            for record in listing.split("\0"):
                meta, _, path = record.partition("\t")
                parts = meta.split(" ")
                if len(parts) == 3 and parts[1] == "blob" and _is_dvc_file(path):
                    blobs[f"{commit}\0{path}"] = parts[2]
        return _git_outs(root, blobs)
    raw = _git(root, "log", "--all", "--reverse", "--no-renames", "--relative", "--raw", "--no-abbrev", "-z",
               "--format=%x01%H", "--", f"*{DVC_SUFFIX}", LOCK_NAME, f"*/{LOCK_NAME}")  # fmt: skip
    commit = ""
    fields = raw.decode("utf-8", "surrogateescape").split("\0")
    i = 0
    while i < len(fields):
        field = fields[i].strip("\n")
        if field.startswith("\x01"):
            commit = field[1:].strip()
            i += 1
        elif field.startswith(":"):  # ":old-mode new-mode old-blob new-blob status", then the path
            change = field[1:].split(" ")
            path = fields[i + 1] if i + 1 < len(fields) else ""
            if path and len(change) > 3 and change[3].strip("0") and _is_dvc_file(path):
                blobs[f"{commit}\0{path}"] = change[3]
            i += 2
        else:
            i += 1
    return _git_outs(root, blobs)


def _is_dvc_file(path: str) -> bool:
    return path.endswith(DVC_SUFFIX) or posixpath.basename(path) == LOCK_NAME


def worktree_outs(root: Path) -> list[DvcOut]:
    """The outs of the ``.dvc`` files and ``dvc.lock`` files now in the working tree."""
    outs: list[DvcOut] = []
    for rel in _worktree_files(root):
        try:
            text = (root / rel).read_bytes()
        except OSError:
            continue
        outs += parse_outs(text, rel)
    return outs


def _worktree_files(root: Path) -> list[str]:
    from keel.services.data_git import _git, is_git_repo

    if is_git_repo(root):
        out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                   f"*{DVC_SUFFIX}", LOCK_NAME, f"*/{LOCK_NAME}")  # fmt: skip
        names = out.decode("utf-8", "surrogateescape").split("\0")
        return sorted({n for n in names if n and (root / n).is_file()})
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".dvc/", ".git/", ".keel/")) or not path.is_file():
            continue
        if rel.endswith(DVC_SUFFIX) or path.name == LOCK_NAME:
            found.append(rel)
    return sorted(found)


def dvc_tracked(repo: Workspace, exclude: set[str]) -> list[Tracked]:
    """The data that the working tree's DVC files track and no ``.keel`` pointer does
    (``exclude``: data paths with a pointer), as keel pointers resolved through the
    import ledger: what lets ``keel data checkout`` restore a commit made before the
    switch to keel. Empty when nothing was imported from DVC into this workspace."""
    from keel.services.data_workspace import Tracked
    from keel.services.importers.ledger import Ledger

    outs = [o for o in worktree_outs(repo.root) if o.path not in exclude]
    if not outs:
        return []
    ledger = Ledger(_meta(repo.root), "dvc")
    known = ledger.details("object", [o.md5 for o in outs])
    if not known and not ledger.details("object"):
        return []  # never imported: the DVC files are DVC's business
    tracked = []
    for out in outs:
        found = known.get(out.md5)
        if found is None:
            raise NotFound(
                f"{out.path} ({out.declared_in}) is at a DVC version keel has not imported ({out.md5})",
                "run 'keel import dvc' (it imports what is new, from the DVC cache)",
            )
        oid, detail = found
        kind = "dir" if out.is_dir else "file"
        pointer = Pointer(kind, posixpath.basename(out.path), oid, int(detail.get("size", out.size)),
                          int(detail.get("files", 1)), out.isexec)  # fmt: skip
        tracked.append(Tracked(out.declared_in + "#" + out.path, out.path, pointer))
    return tracked


def dvc_history_pointers(repo: Workspace) -> list[Pointer]:
    """Keel pointers for every imported DVC version any commit's DVC files name (what
    ``keel data gc --all-commits`` keeps for them)."""
    from keel.services.importers.ledger import Ledger

    known = Ledger(_meta(repo.root), "dvc").details("object")
    if not known:
        return []
    pointers = []
    for out, _commit in history_outs(repo.root):
        found = known.get(out.md5)
        if found is not None:
            oid, detail = found
            kind = "dir" if out.is_dir else "file"
            pointers.append(Pointer(kind, posixpath.basename(out.path), oid, int(detail.get("size", 0)),
                                    int(detail.get("files", 1)), out.isexec))  # fmt: skip
    return pointers


_MD5_WORKSPACE_MAX = 64 << 20  # bytes of a workspace file hashed with md5 to tell which pointer it matches


def dvc_disagreements(repo: Workspace, tracked: list[Tracked]) -> list[Disagreement]:
    """The keel pointers of ``tracked`` whose path a working-tree ``.dvc`` file (or
    ``dvc.lock``) names at other data: its md5 maps (through the import ledger) to
    another keel version, or to none (``dvc add`` ran after the import). A file's
    workspace bytes are hashed with md5 (up to 64 MiB) to say whether the ``.dvc``
    file describes them. Nothing is read from the database unless a DVC file names a
    keel-tracked path."""
    from keel.services.data_history import Disagreement
    from keel.services.importers.ledger import Ledger

    by_path = {t.data_path: t for t in tracked if t.pointer_path.endswith(POINTER_SUFFIX)}
    if not by_path:
        return []
    try:
        outs = [o for o in worktree_outs(repo.root) if o.path in by_path]
        if not outs:
            return []
        known = Ledger(_meta(repo.root), "dvc").details("object", [o.md5 for o in outs])
    except KeelError:
        return []  # a DVC file keel cannot read: a warning about it must not stop keel's own commands
    found: list[Disagreement] = []
    for out in outs:
        keel = by_path[out.path]
        pointer = keel.pointer
        version = known.get(out.md5)
        if version is not None and version[0] == pointer.oid:
            continue
        matches: bool | None = None
        if version is None and not out.is_dir:
            hashes = _workspace_hashes(repo.root / out.path, out)
            if hashes is not None:
                matches = out.md5 in hashes[0]
                if matches and hashes[1] == pointer.oid:
                    continue  # never imported, but both name the workspace's bytes
        if version is not None:
            says = f"keel version {version[0][:12]}"
        else:
            says = "a version keel has not imported"
        what = f"{out.nfiles:,} files, " if out.is_dir else ""
        other = f"md5 {out.md5[:12]} ({what}{out.size:,} bytes; {says})"
        keel_what = f"{pointer.files:,} files, " if pointer.is_dir else ""
        keel_says = f"{pointer.oid[:12]} ({keel_what}{pointer.size:,} bytes)"
        found.append(Disagreement(out.path, out.declared_in, other, keel.pointer_path, keel_says, matches))
    return found


def _workspace_hashes(path: Path, out: DvcOut) -> tuple[set[str], str] | None:
    """The md5s DVC may give the workspace file ``path`` and its keel oid, from one read
    (None: not a regular file, or larger than 64 MiB)."""
    import blake3

    try:
        st = os.lstat(path)
        if not os.path.isfile(path) or os.path.islink(path) or st.st_size > _MD5_WORKSPACE_MAX:
            return None
        digest = hashlib.md5(usedforsecurity=False)
        unix = hashlib.md5(usedforsecurity=False) if out.legacy else None
        keel = blake3.blake3()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                keel.update(chunk)
                if unix is not None:
                    unix.update(chunk.replace(b"\r\n", b"\n"))
    except OSError:
        return None
    md5s = {digest.hexdigest()} | ({unix.hexdigest()} if unix is not None else set())
    return md5s, keel.hexdigest()


def _meta(root: Path) -> Store:
    """The workspace's metadata store, also at a commit older than ``.keel/config.toml``
    (checking such a commit out removes the config; the embedded database stays)."""
    from keel.services.data_config import CONFIG, DIRNAME
    from keel.services.data_versions import open_meta
    from keel.services.workspace import open_store

    keel_dir = root / DIRNAME
    if (keel_dir / CONFIG).is_file() or os.environ.get("KEEL_URI") or not (keel_dir / "keel.db").is_file():
        return open_meta(root)
    return open_store(database=f"sqlite:///{keel_dir / 'keel.db'}", objects=str(keel_dir / "objects"))
