"""Workspaces and stores: where keel keeps things, and opening them.

A workspace is a directory holding ``.keel/``::

    .keel/config.toml   [store] database = "keel.db", objects = "objects"
    .keel/keel.db       SQLite metadata (WAL)
    .keel/objects/      the local content-addressed object store

Which store a process uses, first match wins:

1. explicit ``database``/``objects`` arguments;
2. ``KEEL_URI`` (a database URL; its ``objects=`` query parameter or
   ``KEEL_OBJECTS`` gives the object store, default ``objects/`` beside a
   SQLite file);
3. the nearest ``.keel/`` found walking up from the current directory.

Where there is none, the Python API works against a workspace *created on first
write* (:func:`open_pending_store`): reads see an empty store and create nothing;
the first write creates ``.keel/`` in the current folder, as ``keel init`` would.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode

from keel.core.urls import mask_url
from keel.errors import AlreadyExists, InvalidInput, NotFound, NoWorkspace, StoreError
from keel.fileio import atomic_write_text
from keel.meta import Database, open_database
from keel.meta.engine import open_empty_database
from keel.meta.migrate import ensure_schema
from keel.meta.tracking import TrackingStore
from keel.objects import ObjectInfo, ObjectStore, open_object_store
from keel.objects.base import check_oid
from keel.services.workspace_config import CONFIG, DIRNAME, read_workspace_config

__all__ = [
    "DIRNAME",
    "Store",
    "find_workspace",
    "init_workspace",
    "open_pending_store",
    "open_store",
    "resolve_store_urls",
    "workspace_server",
]

_CONFIG_TEMPLATE = """\
# keel workspace configuration (created by 'keel init').
# Paths are relative to this .keel/ folder; URLs select a shared store.
[store]
database = {database!r}
objects = {objects!r}
"""


@dataclass
class Store:
    """An open metadata database plus object store."""

    db: Database
    objects: ObjectStore
    root: Path | None = None  # the workspace folder, when there is one
    tracking: TrackingStore = field(init=False)

    def __post_init__(self) -> None:
        self.tracking = TrackingStore(self.db)

    def close(self) -> None:
        """Release connections."""
        self.db.close()
        self.objects.close()

    @property
    def pending(self) -> bool:
        """True while this is a workspace created on first write that has had none yet
        (:func:`open_pending_store`): nothing exists on disk."""
        return self.db.pending

    def describe(self) -> dict[str, Any]:
        """Where this store lives (for ``keel info``)."""
        workspace = str(self.root) if self.root else None
        if workspace and self.pending:
            workspace += " (not created yet: the first write creates .keel/ there)"
        return {
            "workspace": workspace,
            "database": mask_url(self.db.url),
            "objects": mask_url(self.objects.url),
        }


def find_workspace(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``.keel/``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DIRNAME / CONFIG).is_file():
            return folder
    return None


def _split_objects(uri: str) -> tuple[str, str | None]:
    """Take an ``objects=`` query parameter out of a database URL."""
    base, sep, query = uri.partition("?")
    if not sep:
        return uri, None
    pairs = parse_qsl(query, keep_blank_values=True)
    objects = next((v for k, v in pairs if k == "objects"), None)
    rest = urlencode([(k, v) for k, v in pairs if k != "objects"])
    return (f"{base}?{rest}" if rest else base), objects


def _sqlite_dir(database: str) -> Path | None:
    if database.startswith("sqlite:///"):
        return Path(database[len("sqlite:///") :]).expanduser().resolve().parent
    if "://" not in database:
        return Path(database).expanduser().resolve().parent
    return None


def resolve_store_urls(
    database: str | None = None, objects: str | None = None, start: str | os.PathLike[str] | None = None
) -> tuple[str, str, Path | None]:
    """``(database_url, objects_url, workspace_root)`` for this process."""
    env_uri = os.environ.get("KEEL_URI")
    # KEEL_URI=http(s)://... is a keel server: the sdk talks to it (keel.sdk.remote); what
    # stays local by nature (keel init, keel data) still uses the workspace found here.
    if database is None and env_uri and not env_uri.lower().startswith(("http://", "https://")):
        database = env_uri
    if database is not None:
        if database.lower().startswith(("http://", "https://")):
            raise InvalidInput(
                f"{mask_url(database)} is a keel server, not a database",
                "give a database URL (sqlite:///path or postgresql+psycopg://...); reach a server with KEEL_URI",
            )
        database, from_query = _split_objects(database)
        objects = objects or from_query or os.environ.get("KEEL_OBJECTS")
        if objects is None:
            folder = _sqlite_dir(database)
            if folder is None:
                raise InvalidInput(
                    f"no object store given for {mask_url(database)}",
                    "set KEEL_OBJECTS=s3://bucket/prefix (or add ?objects=... to KEEL_URI)",
                )
            objects = str(folder / "objects")
        return database, objects, None
    root = find_workspace(start)
    if root is None:
        raise NoWorkspace(
            "no keel workspace here (no .keel/ in this folder or above, and KEEL_URI is not set)",
            "run 'keel init' in your project folder",
        )
    database, objects = _workspace_urls(root, objects)
    return database, objects, root


def _workspace_urls(root: Path, objects: str | None = None) -> tuple[str, str]:
    """The database URL and object store of the workspace at ``root`` (its config's, or
    the defaults of ``keel init`` when it has none yet)."""
    keel_dir = root / DIRNAME
    section = read_workspace_config(root).store
    database = section.database
    objects = objects or section.objects
    if "://" not in database:
        database = "sqlite:///" + str((keel_dir / database).resolve())
    if "://" not in objects:
        objects = str((keel_dir / objects).resolve())
    return database, objects


def workspace_server(root: str | os.PathLike[str]) -> str | None:
    """The keel server a workspace works against (``[store] server``, set by
    ``keel init --store http://...``), or None."""
    return read_workspace_config(root).store.server


_OPEN: dict[tuple[str, str], Store] = {}
_OPEN_LOCK = threading.Lock()


def open_store(
    database: str | None = None,
    objects: str | None = None,
    start: str | os.PathLike[str] | None = None,
    cached: bool = True,
) -> Store:
    """Open (and migrate if needed) the store this process should use.

    With ``cached`` the same URLs return the same open :class:`Store`, so a
    process holds one connection pool per database.
    """
    db_url, obj_url, root = resolve_store_urls(database, objects, start)
    key = (db_url, obj_url)
    with _OPEN_LOCK:
        if cached and key in _OPEN:
            return _OPEN[key]
        db = open_database(db_url)
        ensure_schema(db)
        store = Store(db, open_object_store(obj_url), root)
        if cached:
            _OPEN[key] = store
        return store


def init_workspace(
    folder: str | os.PathLike[str] | None = None,
    database: str | None = None,
    objects: str | None = None,
    force: bool = False,
) -> Path:
    """Create ``.keel/`` in ``folder`` and its store; return the workspace root."""
    root = Path(folder or os.getcwd()).resolve()
    keel_dir = root / DIRNAME
    config_path = keel_dir / CONFIG
    if config_path.exists() and not force:
        raise AlreadyExists(f"{root} is a keel workspace already", "use it, or pass --force to rewrite its config")
    try:
        keel_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create {keel_dir}: {exc.strerror or exc}",
            f"make {root} writable (or move away the file {keel_dir}), or run 'keel init' in another folder",
        ) from None
    server = None
    if database is not None and database.lower().startswith(("http://", "https://")):
        # A server's workspace: runs and registries live there; .keel/ keeps what is local (data).
        server, database = database, None
    content = _CONFIG_TEMPLATE.format(database=database or "keel.db", objects=objects or "objects")
    if server is not None:
        content += f"server = {server!r}  # a keel server: the Python API and the CLI work against it\n"
    try:
        atomic_write_text(config_path, content)
        atomic_write_text(
            keel_dir / ".gitignore",
            "# keel's store: share it through a remote, not git. config.toml belongs in git.\n"
            "keel.db*\n*.migrate-lock\nobjects/\ntmp/\n",
        )
    except OSError as exc:
        raise StoreError(f"cannot write {keel_dir}: {exc.strerror or exc}", "check the folder's permissions") from None
    open_store(start=root, cached=False).close()  # creates and migrates the database
    return root


def open_pending_store(
    folder: str | os.PathLike[str] | None = None, on_created: Callable[[Path], None] | None = None
) -> Store:
    """The store of a workspace in ``folder`` (default: the current one) that is created on
    its first write: until then it is an empty store (lists are empty, gets raise NotFound)
    and nothing is created on disk; the first write of a row or an object creates
    ``folder/.keel`` as ``keel init`` does, calls ``on_created(<the .keel folder>)`` once,
    and goes there. One store per folder in this process (cached like :func:`open_store`).
    """
    root = Path(folder or os.getcwd()).resolve()
    db_url, obj_url = _workspace_urls(root)
    key = (db_url, obj_url)
    with _OPEN_LOCK:
        found = _OPEN.get(key)
        if found is not None:
            return found

        def create() -> None:
            try:
                init_workspace(root)
            except AlreadyExists:  # another process made it meanwhile: use it, once it is migrated
                open_store(start=root, cached=False).close()
                return
            if on_created is not None:
                on_created(root / DIRNAME)

        db = open_empty_database(copy_of=_empty_schema())
        db.create_on_first_write(db_url, create)
        store = Store(db, _ObjectsCreatedOnWrite(obj_url, db), root)
        _OPEN[key] = store
        return store


_EMPTY_SCHEMA: list[Database] = []  # a migrated, empty in-memory database, made once per process


def _empty_schema() -> Database:
    """An empty database with the current schema, to copy (migrating each one costs ~0.3 s).
    Called under ``_OPEN_LOCK``."""
    if not _EMPTY_SCHEMA:
        template = open_empty_database()
        ensure_schema(template)
        _EMPTY_SCHEMA.append(template)
    return _EMPTY_SCHEMA[0]


class _ObjectsCreatedOnWrite(ObjectStore):
    """The local object store of a workspace created on first write (:func:`open_pending_store`):
    empty and absent until then; storing an object creates the workspace first (through its
    database, which does it once for both)."""

    def __init__(self, url: str, db: Database) -> None:
        self.url = url
        self._db = db
        self._store: ObjectStore | None = None

    def _opened(self) -> ObjectStore | None:
        """The real store once the workspace exists, else None."""
        if self._store is None and not self._db.pending:
            self._store = open_object_store(self.url)
        return self._store

    def _for_write(self) -> ObjectStore:
        self._db.create_now()
        store = self._opened()
        if store is None:  # pragma: no cover - create_now either created it or raised
            raise StoreError(f"cannot create the object store at {self.url}", "run 'keel init' here")
        return store

    def _absent(self, oid: str) -> NotFound:
        return NotFound(f"object {check_oid(oid)} is not in the store at {self.url}", "check the id")

    # -- writes create the workspace ----------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        return self._for_write().put_bytes(data)

    def put_file(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        return self._for_write().put_file(path)

    def _write(self, oid: str, data: bytes) -> None:
        self._for_write().put_bytes(data)

    # -- reads see an empty store until then ----------------------------------------------
    def _read(self, oid: str) -> bytes:
        return self.get_bytes(oid, verify=False)

    def get_bytes(self, oid: str, verify: bool = True) -> bytes:
        store = self._opened()
        if store is None:
            raise self._absent(oid)
        return store.get_bytes(oid, verify)

    def get_file(self, oid: str, dest: str | os.PathLike[str]) -> None:
        store = self._opened()
        if store is None:
            raise self._absent(oid)
        store.get_file(oid, dest)

    def _copy_to(self, oid: str, out: BinaryIO) -> None:
        out.write(self.get_bytes(oid))

    def verify(self, oid: str) -> None:
        store = self._opened()
        if store is None:
            raise self._absent(oid)
        store.verify(oid)

    def exists(self, oid: str) -> bool:
        store = self._opened()
        return store is not None and store.exists(oid)

    def exists_many(self, oids: Iterable[str]) -> set[str]:
        store = self._opened()
        return store.exists_many(oids) if store is not None else set()

    def iter_oids(self) -> Iterator[str]:
        store = self._opened()
        return store.iter_oids() if store is not None else iter(())

    def iter_objects(self) -> Iterator[ObjectInfo]:
        store = self._opened()
        return store.iter_objects() if store is not None else iter(())

    def freshen(self, oid: str) -> None:
        store = self._opened()
        if store is not None:
            store.freshen(oid)

    def freshened(self, oid: str) -> bool:
        store = self._opened()
        return store is not None and store.freshened(oid)

    def freshen_many(self, oids: Iterable[str]) -> set[str]:
        store = self._opened()
        return store.freshen_many(oids) if store is not None else set()

    def delete_many(self, oids: Iterable[str]) -> int:
        store = self._opened()
        return store.delete_many(oids) if store is not None else 0

    def prune(self, infos: Iterable[ObjectInfo], fresh_after: float) -> list[ObjectInfo]:
        store = self._opened()
        return store.prune(infos, fresh_after) if store is not None else []

    def describe(self, oid: str) -> str:
        store = self._opened()
        return store.describe(oid) if store is not None else str(Path(self.url) / oid[:2] / oid[2:])

    def ping(self, timeout: float = 2.0) -> None:
        store = self._opened()
        if store is not None:
            store.ping(timeout)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def close_all_stores() -> None:
    """Close every cached store (its connection pool and object-store client)."""
    with _OPEN_LOCK:
        stores = list(_OPEN.values())
        _OPEN.clear()
    for store in stores:
        store.close()
