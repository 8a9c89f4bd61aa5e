"""Dataset versions in the metadata store, and what runs and registries reference.

Every ``keel data add`` registers ``(path, oid, kind, size, files, git commit,
time)``; a run that used the data records ``dataset:<path>@<oid>`` as an input.

For the embedded SQLite store (a workspace's ``.keel/keel.db``) registration
opens only that database when its schema is current (one insert, no store:
:func:`keel.meta.datasets.register_in_sqlite_file`). Any other store (PostgreSQL
via ``KEEL_URI``, or a database that needs migrating) takes the ordinary path
through :func:`open_store`. The SQL is in :mod:`keel.meta.datasets`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.entities import now_ms
from keel.errors import InvalidInput, NotFound, TooLarge
from keel.meta import datasets as dataset_rows
from keel.services.contract import (
    operation,
    service,
)
from keel.services.data_config import DIRNAME
from keel.services.workspace_config import read_workspace_config

if TYPE_CHECKING:
    from keel.services.workspace import Store

__all__ = ["DatasetVersion", "DatasetVersionService", "open_meta", "protected_oids", "register_versions", "versions_of"]

#: Largest version :meth:`DatasetVersionService.content` reads (bytes).
MAX_CONTENT_BYTES = 64 << 20
_OID_RE = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


@dataclass(frozen=True)
class DatasetVersion:
    """A registered version of tracked data, with the runs that used it."""

    path: str
    oid: str
    kind: str
    size: int
    files: int
    git_commit: str
    created_at: int
    runs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "path": self.path,
            "oid": self.oid,
            "kind": self.kind,
            "size": self.size,
            "files": self.files,
            "git_commit": self.git_commit,
            "created_at": self.created_at,
            "runs": self.runs,
        }


Row = tuple[str, str, str, int, int, str]  # (path, oid, kind, size, files, git_commit)


def open_meta(root: Path) -> Store:
    """The workspace's metadata store (migrated if needed); cached per process."""
    from keel.services.workspace import open_store

    return open_store(start=root)


def _embedded_sqlite(root: Path) -> str | None:
    """The workspace's SQLite file, when this process uses it and no ``KEEL_URI`` overrides."""
    if os.environ.get("KEEL_URI"):
        return None
    config = read_workspace_config(root)
    if not config.exists:
        return None
    database = config.store.database
    if database.startswith("sqlite:///"):
        database = database[len("sqlite:///") :]
    elif "://" in database:
        return None
    path = root / DIRNAME / database
    return str(path) if path.is_file() else None


def register_versions(root: Path, rows: list[Row]) -> None:
    """Record dataset versions (existing ``(path, oid)`` pairs are left as they are)."""
    if not rows:
        return
    fast = _embedded_sqlite(root)
    if fast and dataset_rows.register_in_sqlite_file(fast, rows, now_ms()):
        return
    register_with(open_meta(root), rows)


def register_with(store: Store, rows: list[Row]) -> None:
    """Record dataset versions in ``store`` (any backend)."""
    if rows:
        with store.db.write() as conn:
            dataset_rows.register(conn, rows, now_ms())


def versions_of(store: Store, path: str | None) -> list[DatasetVersion]:
    """Versions of ``path`` (every path if None), newest first, each with the runs that used it."""
    with store.db.read() as conn:
        rows = dataset_rows.versions(conn, path)
        used: dict[tuple[str, str], list[str]] = {}
        for entity, version, run_id in dataset_rows.runs_of_versions(conn, path):
            used.setdefault((entity, version), []).append(run_id)
    return [DatasetVersion(p, o, k, s, f, c, at, runs=used.get((p, o), [])) for p, o, k, s, f, c, at in rows]


def protected_oids(store: Store) -> tuple[set[str], set[str]]:
    """What gc must keep whatever the pointers say: ``(objects, data versions)``.

    ``objects``: run artifacts, any object id a registered model version's
    source names, and recorded configuration snapshots. ``data versions``:
    oids (files or trees) of datasets some run used.
    """
    objects = set(store.tracking.referenced_oids())
    with store.db.read() as conn:
        versions = dataset_rows.used_versions(conn)
        for source in dataset_rows.model_version_sources(conn):
            objects.update(_OID_RE.findall(source))
        objects.update(dataset_rows.config_snapshot_hashes(conn))
    return objects, versions


def all_version_oids(store: Store) -> set[str]:
    """Every registered dataset version's oid."""
    with store.db.read() as conn:
        return dataset_rows.version_oids(conn)


@service("datasets")
class DatasetVersionService:
    """Dataset versions of one store, as a service (the sdk and the server's service API use it)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @operation("writer")
    def register(self, rows: list[Row]) -> None:
        """Record versions ``(path, oid, kind, size, files, git_commit)``; known ones are kept as they are."""
        register_with(self.store, [tuple(row) for row in rows])  # type: ignore[misc]

    @operation("reader")
    def versions(self, path: str | None = None) -> list[DatasetVersion]:
        """Versions of ``path`` (every path if None), newest first, with the runs that used each."""
        return versions_of(self.store, path)

    @operation("reader")
    def content(self, path: str, version: str | None = None) -> tuple[str, bytes]:
        """``(oid, bytes)`` of a registered single-file version of ``path`` kept in this store's
        objects: ``version`` is its oid or a unique prefix of it (an MLflow dataset's digest is
        one), None the newest. What ``keel.evaluate(data="dataset:PATH@VERSION")`` reads."""
        found = versions_of(self.store, path)
        if version:
            found = [v for v in found if v.oid.startswith(version.lower())]
        if not found:
            what = f"version {version!r} of {path!r}" if version else f"a version of {path!r}"
            raise NotFound(f"no registered {what}", f"list them: keel data log {path}")
        if len({v.oid for v in found}) > 1 and version:
            raise InvalidInput(f"{version!r} names several versions of {path!r}", "give more of the oid")
        chosen = found[0]
        if chosen.kind != "file":
            raise InvalidInput(f"{path}@{chosen.oid[:12]} is a folder", "read one file's version")
        if chosen.size > MAX_CONTENT_BYTES:
            raise TooLarge(
                f"{path}@{chosen.oid[:12]} is {chosen.size:,} bytes, over {MAX_CONTENT_BYTES:,}",
                "check the version out with keel data checkout and read the file",
            )
        try:
            return chosen.oid, self.store.objects.get_bytes(chosen.oid)
        except NotFound:
            raise NotFound(
                f"the data of {path}@{chosen.oid[:12]} is not in this store", "push it there first: keel data push"
            ) from None
