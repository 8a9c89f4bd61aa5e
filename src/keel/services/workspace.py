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
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from keel.core.urls import mask_url
from keel.errors import AlreadyExists, InvalidInput, NoWorkspace, StoreError
from keel.fileio import atomic_write_text
from keel.meta import Database, open_database
from keel.meta.migrate import ensure_schema
from keel.meta.tracking import TrackingStore
from keel.objects import ObjectStore, open_object_store
from keel.services.workspace_config import CONFIG, DIRNAME, read_workspace_config

__all__ = [
    "DIRNAME",
    "Store",
    "find_workspace",
    "init_workspace",
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

    def describe(self) -> dict[str, Any]:
        """Where this store lives (for ``keel info``)."""
        return {
            "workspace": str(self.root) if self.root else None,
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
    keel_dir = root / DIRNAME
    section = read_workspace_config(root).store
    database = section.database
    objects = objects or section.objects
    if "://" not in database:
        database = "sqlite:///" + str((keel_dir / database).resolve())
    if "://" not in objects:
        objects = str((keel_dir / objects).resolve())
    return database, objects, root


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
    keel_dir.mkdir(parents=True, exist_ok=True)
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


def close_all_stores() -> None:
    """Close every cached store (its connection pool and object-store client)."""
    with _OPEN_LOCK:
        stores = list(_OPEN.values())
        _OPEN.clear()
    for store in stores:
        store.close()
