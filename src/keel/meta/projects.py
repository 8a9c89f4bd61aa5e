"""Renaming a project: the one change a project's row takes after it is created.

Everything else refers to a project by its id, so a project's name can change while its
runs, traces, MLflow experiment (the experiment id *is* the project id) and their digests
stay as they are (a run's digest does not cover its project). What names a project by
its *name* moves in the same transaction: the roles granted on it (``auth_grants``) and its
retention policies (``retention_policies``). The
rename is recorded in the audit log (``auth_audit``, action ``project.rename``: who, when,
the old and the new name), which ``keel server audit`` shows.

Processes do not cache project names or ids (:mod:`keel.meta.tracking`, :mod:`keel.meta.traces`
and the MLflow service read them from the database), so another worker of a server never
routes the old name to the renamed project.
"""

from __future__ import annotations

import json

from keel.core.entities import Project, now_ms, project_not_found
from keel.errors import AlreadyExists, Conflict
from keel.meta.dbapi import ConstraintViolation as SAIntegrityError
from keel.meta.engine import Database

__all__ = ["RENAME_ACTION", "rename_project"]

#: The audit log's action for a rename (its detail: ``{"old": ..., "new": ..., "project_id": ...}``).
RENAME_ACTION = "project.rename"

_SQL_PROJECT = "SELECT id, name, description, created_at FROM projects WHERE name = ?"
_SQL_PROJECT_ID = "SELECT id FROM projects WHERE name = ?"
_SQL_GRANTS_ON = "SELECT COUNT(*) AS n FROM auth_grants WHERE project = ?"
_SQL_RENAME = "UPDATE projects SET name = ? WHERE id = ?"
_SQL_MOVE_GRANTS = "UPDATE auth_grants SET project = ? WHERE project = ?"
_SQL_MOVE_RETENTION = "UPDATE retention_policies SET project = ? WHERE project = ?"  # keel.meta.retention
_SQL_AUDIT = "INSERT INTO auth_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)"


def rename_project(db: Database, name: str, new_name: str, who: str = "") -> Project:
    """Rename project ``name`` to ``new_name`` (both already checked names), moving the roles
    granted on it and writing the audit entry, in one transaction.

    Raises:
        NotFound: no project ``name``.
        AlreadyExists: a project ``new_name`` exists.
        Conflict: roles are granted on ``new_name`` already (granted ahead of a project of
            that name): renaming would open this project to those users.
    """
    taken = AlreadyExists(f"project {new_name!r} exists already", "choose another name, or use that project")
    try:
        with db.write() as conn:
            row = conn.execute(_SQL_PROJECT, (name,)).first()
            if row is None:
                raise project_not_found(name)
            if new_name == name:  # nothing to do, nothing to record
                return Project(name, int(row.id), int(row.created_at), row.description)
            if conn.execute(_SQL_PROJECT_ID, (new_name,)).scalar() is not None:
                raise taken
            waiting = conn.execute(_SQL_GRANTS_ON, (new_name,)).scalar_one()
            if waiting:
                raise Conflict(
                    f"{waiting} role(s) are granted on the name {new_name!r} already: renaming project {name!r} "
                    "to it would give those users this project",
                    f"see them with 'keel server grants --project {new_name}' and revoke them first, "
                    "or choose another name",
                )
            conn.execute(_SQL_RENAME, (new_name, row.id))
            moved = conn.execute(_SQL_MOVE_GRANTS, (new_name, name)).rowcount
            conn.execute(_SQL_MOVE_RETENTION, (new_name, name))  # its trace retention follows it
            detail = {"old": name, "new": new_name, "project_id": int(row.id), "grants_moved": int(moved or 0)}
            conn.execute(_SQL_AUDIT, (now_ms(), who, RENAME_ACTION, new_name, json.dumps(detail, sort_keys=True)))
    except SAIntegrityError:  # the name was taken meanwhile by another process
        raise taken from None
    return Project(new_name, int(row.id), int(row.created_at), row.description)
