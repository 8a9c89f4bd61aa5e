"""Back up a local workspace, and restore it: ``keel backup DEST``, ``keel restore SRC``.

A backup is a folder laid out like ``.keel/`` itself, so it can be opened as it is
(``KEEL_URI=sqlite:///DEST/keel.db``: the objects are found beside the file)::

    DEST/keel.db          the database, a consistent snapshot
    DEST/objects/ab/...   every object the store held when the snapshot was taken (or later)
    DEST/config.toml      the workspace's config, when there is one
    DEST/manifest.json    what was backed up: keel version, time, row counts, object count

How it stays consistent while the store is in use:

1. The database is copied with SQLite's online backup API (``sqlite3.Connection.backup``
   in one step): one read transaction of the source, so the copy is the database as of
   one commit, and writers (in WAL mode) go on meanwhile.
2. Then the objects folder is copied: hard links where the file system allows (objects are
   never modified, and a link survives the object's removal from the store), else copies
   (``link=False`` forces copies: a link shares the disk blocks, so it is no protection
   against losing that disk). Objects are only ever added, so the objects present after
   the snapshot are a superset of those it references.
3. Everything is written into a hidden sibling folder first and renamed to ``DEST`` at the
   end: a backup cut short never looks complete.

PostgreSQL and S3 are backed up with their own tools (``pg_dump``, a bucket copy or
versioning): see docs/operations.md. :func:`restore_backup` makes a workspace from a
backup (into a folder that has no store yet) and checks it with ``keel verify``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from keel._version import __version__
from keel.core.progress import Progress, meter, step
from keel.core.urls import mask_url
from keel.errors import AlreadyExists, InvalidInput, NotFound, StoreError
from keel.fileio import atomic_write_text
from keel.meta.sqlite_files import copy_database, table_row_counts
from keel.objects.local import LocalObjectStore
from keel.services.verify import VerifyReport, verify_store
from keel.services.workspace import Store, open_store
from keel.services.workspace_config import CONFIG, DIRNAME, read_workspace_config

__all__ = ["DATABASE", "MANIFEST", "OBJECTS", "BackupReport", "RestoreReport", "backup_store", "restore_backup"]

DATABASE = "keel.db"
OBJECTS = "objects"
MANIFEST = "manifest.json"
FORMAT = "keel-backup"
FORMAT_VERSION = 1
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}


@dataclass
class BackupReport:
    """What :func:`backup_store` wrote (the same facts as its ``manifest.json``)."""

    dest: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        """Objects in the backup."""
        return int(self.manifest["objects"]["count"])

    @property
    def tables(self) -> dict[str, int]:
        """Rows per table of the database snapshot."""
        return dict(self.manifest["database"]["tables"])


@dataclass
class RestoreReport:
    """What :func:`restore_backup` made, and what ``keel verify`` found there."""

    root: Path
    manifest: dict[str, Any]
    objects: int
    verify: VerifyReport


def _sqlite_file(store: Store, what: str) -> Path:
    if not store.db.is_sqlite:
        raise InvalidInput(
            f"{what} works on a SQLite workspace; this store's database is {mask_url(store.db.url)}",
            "back up PostgreSQL with pg_dump and the bucket with a copy or versioning: see docs/operations.md",
        )
    database = store.db.database
    if not database:
        raise InvalidInput(f"{what} needs a database file, not an in-memory one", "use a workspace")
    return Path(database)


def _objects_folder(store: Store, what: str) -> LocalObjectStore:
    if not store.objects.capabilities.local_path:
        raise InvalidInput(
            f"{what} copies a local objects folder; this store's objects are at {mask_url(store.objects.url)}",
            "back up a bucket with a bucket copy or versioning: see docs/operations.md",
        )
    return cast(LocalObjectStore, store.objects)  # (the one store with local_path)


def _staging(dest: Path) -> Path:
    """A new hidden folder beside ``dest`` to build in; ``dest`` must not exist or be empty."""
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise AlreadyExists(f"{dest} exists and is not an empty folder", "give a new folder for the backup")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.keel-backup-{os.getpid()}"
    if staging.exists():
        _remove_tree(staging)
    staging.mkdir()
    return staging


def _remove_tree(folder: Path) -> None:
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(dirpath, name), 0o600)
    shutil.rmtree(folder, ignore_errors=True)


def _snapshot(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` to ``target`` with the online backup API, in one
    step (one read transaction: a consistent snapshot while writers go on)."""
    if not source.is_file():
        raise NotFound(f"no database file at {source}", "check the path")
    copy_database(source, target)


def _copy_objects(
    source: LocalObjectStore, target: Path, link: bool, progress: Progress | None = None
) -> dict[str, int]:
    """Link (or copy) every object file of ``source`` into ``target``'s fan-out folders
    (``progress``: objects done)."""
    counts = {"count": 0, "bytes": 0, "linked": 0, "copied": 0}
    made: set[str] = set()
    # Listed first only for a progress total (a store can hold millions of objects).
    oids: Iterable[str] = source.iter_oids() if progress is None else list(source.iter_oids())
    counter = meter(progress, len(oids) if isinstance(oids, list) else 0)
    for oid in oids:
        counter.add(1)  # (an object looked at: linked, copied, or gone meanwhile)
        src = source.path(oid)
        fan = oid[:2]
        if fan not in made:
            (target / fan).mkdir(parents=True, exist_ok=True)
            made.add(fan)
        dst = target / fan / oid[2:]
        try:
            size = src.stat().st_size
        except FileNotFoundError:  # removed meanwhile (keel gc): the snapshot may still name it
            continue
        linked = False
        if link:
            try:
                os.link(src, dst)
                linked = True
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise StoreError(f"cannot link {src} into {target}: {exc.strerror}", "check the folder") from None
                link = False  # one refusal is enough to know: copy from now on
        if not linked:
            try:
                shutil.copy2(src, dst)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot copy {src} to {dst}: {exc.strerror}", "check the disk space") from None
        counts["count"] += 1
        counts["bytes"] += size
        counts["linked" if linked else "copied"] += 1
    counter.close()
    return counts


def backup_store(
    store: Store, dest: str | os.PathLike[str], *, link: bool = True, progress: Progress | None = None
) -> BackupReport:
    """Back up a SQLite workspace with local objects into the new folder ``dest`` (see the
    module doc): a consistent database snapshot, then its objects (hard links when ``link``
    and the file system allows, else copies), its config and a ``manifest.json``.
    ``progress``: the snapshot, then the objects done (:mod:`keel.core.progress`)."""
    what = "keel backup"
    database = _sqlite_file(store, what)
    objects = _objects_folder(store, what)
    dest = Path(dest).expanduser().absolute()
    if dest == objects.root or objects.root in dest.parents or dest in database.parents:
        raise InvalidInput(f"{dest} is inside the store it would back up", "give a folder outside .keel/")
    staging = _staging(dest)
    try:
        taken = datetime.datetime.now(datetime.UTC)
        step(progress, "database")
        _snapshot(database, staging / DATABASE)
        tables = table_row_counts(staging / DATABASE)
        counts = _copy_objects(objects, staging / OBJECTS, link, step(progress, "objects", "objects"))
        (staging / OBJECTS).mkdir(exist_ok=True)
        if store.root is not None and (store.root / DIRNAME / CONFIG).is_file():
            shutil.copy2(store.root / DIRNAME / CONFIG, staging / CONFIG)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "keel_version": __version__,
            "created_at": taken.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": {
                "workspace": str(store.root) if store.root else None,
                "database": mask_url(store.db.url),
                "objects": str(objects.root),
            },
            "database": {
                "file": DATABASE,
                "bytes": (staging / DATABASE).stat().st_size,
                "tables": tables,
            },
            "objects": {"folder": OBJECTS, **counts},
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            dest.rmdir()  # empty (checked): the rename takes its place
        os.rename(staging, dest)
    except BaseException:
        _remove_tree(staging)
        raise
    return BackupReport(dest, manifest)


def read_manifest(src: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of the backup folder ``src``; NotFound or InvalidInput if it is not one."""
    path = Path(src) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{src} is not a keel backup (no {MANIFEST})", "give the folder 'keel backup' wrote") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", "give the folder 'keel backup' wrote") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a keel backup manifest", "give the folder 'keel backup' wrote")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise InvalidInput(
            f"{src} was written by keel {manifest.get('keel_version')} in a newer backup format",
            "restore it with that keel version or a later one",
        )
    return manifest


_DEFAULT_CONFIG = """\
# keel workspace configuration (restored by 'keel restore').
[store]
database = 'keel.db'
objects = 'objects'
"""


def restore_backup(
    src: str | os.PathLike[str],
    into: str | os.PathLike[str],
    *,
    link: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
) -> RestoreReport:
    """Make the workspace ``into/.keel/`` from the backup folder ``src`` and check it.

    ``into`` must have no store yet (no ``.keel/keel.db``): move a damaged one aside first.
    The database file and the objects are copied (``link``: objects are hard-linked where
    possible), the backup's config is kept when its store is the default ``keel.db`` and
    ``objects`` (else a default config is written), the schema is migrated if the backup is
    older than this keel, and ``keel verify`` runs on the result (``verify=False`` skips it).
    ``progress``: the database copy, the objects done, then the verification.
    """
    source = Path(src).expanduser().absolute()
    manifest = read_manifest(source)
    root = Path(into).expanduser().absolute()
    keel_dir = root / DIRNAME
    if (keel_dir / DATABASE).exists() or (keel_dir / OBJECTS).exists():
        raise AlreadyExists(
            f"{root} has a keel store already ({keel_dir})", "restore into a new folder, or move .keel/ aside first"
        )
    keel_dir.mkdir(parents=True, exist_ok=True)
    database = source / manifest["database"]["file"]
    if not database.is_file():
        raise NotFound(f"the backup {source} has no database file {database.name}", "is the backup complete?")
    tmp = keel_dir / f".{DATABASE}.restore-{os.getpid()}"
    step(progress, "database")
    try:
        _snapshot(database, tmp)
        os.rename(tmp, keel_dir / DATABASE)
    finally:
        tmp.unlink(missing_ok=True)
    counts = _copy_objects(
        LocalObjectStore(source / manifest["objects"]["folder"]), keel_dir / OBJECTS, link,
        step(progress, "objects", "objects"),
    )  # fmt: skip
    (keel_dir / OBJECTS).mkdir(exist_ok=True)
    text = _DEFAULT_CONFIG
    config = source / CONFIG
    if config.is_file():  # kept when its store is the default layout the backup restores
        kept = config.read_text(encoding="utf-8")
        atomic_write_text(keel_dir / CONFIG, kept)
        with contextlib.suppress(InvalidInput):
            section = read_workspace_config(root).store
            if section.database == DATABASE and section.objects == OBJECTS and not section.server:
                text = kept
    atomic_write_text(keel_dir / CONFIG, text)
    if not (keel_dir / ".gitignore").exists():
        atomic_write_text(
            keel_dir / ".gitignore",
            "# keel's store: share it through a remote, not git. config.toml belongs in git.\n"
            "keel.db*\n*.migrate-lock\nobjects/\ntmp/\n",
        )
    step(progress, "verify")
    store = open_store(start=root, cached=False)  # migrates a backup of an older keel
    try:
        report = verify_store(store) if verify else VerifyReport()
    finally:
        store.close()
    return RestoreReport(root, manifest, counts["count"], report)
