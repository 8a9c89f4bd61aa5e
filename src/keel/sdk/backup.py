"""``keel backup`` / ``keel restore`` for a local workspace (:mod:`keel.services.backup`).

::

    from keel.sdk.backup import backup, restore

    report = backup("/backups/keel-2025-06-01")          # the store this folder uses
    restored = restore("/backups/keel-2025-06-01", "/srv/restored")
    assert restored.verify.ok
"""

from __future__ import annotations

import os

from keel.core.progress import Progress
from keel.sdk.session import get_session
from keel.services.backup import BackupReport, RestoreReport, backup_store, restore_backup

__all__ = ["BackupReport", "RestoreReport", "backup", "restore"]


def backup(
    dest: str | os.PathLike[str],
    *,
    database: str | None = None,
    objects: str | None = None,
    link: bool = True,
    progress: Progress | None = None,
) -> BackupReport:
    """Back up the store this process uses (``database``/``objects``, else ``KEEL_URI`` or the
    nearest ``.keel/``), a SQLite database with a local objects folder, into the new folder
    ``dest``: a consistent snapshot of the database taken with SQLite's online backup API
    (safe while other processes write), then the objects (hard links where possible; copies
    with ``link=False``), the config and a ``manifest.json``. PostgreSQL and S3: see
    docs/operations.md. ``progress``: see :mod:`keel.core.progress`."""
    session = get_session(database, objects, create=False)
    store = session.local_store("keel backup")
    session.writer.flush()  # what this process logged is in the snapshot
    return backup_store(store, dest, link=link, progress=progress)


def restore(
    src: str | os.PathLike[str],
    into: str | os.PathLike[str] = ".",
    *,
    link: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
) -> RestoreReport:
    """Make the workspace ``into/.keel/`` from the backup folder ``src`` (``into`` must have
    no store yet) and run ``keel verify`` on it (the report's ``verify``)."""
    return restore_backup(src, into, link=link, verify=verify, progress=progress)
