"""Model registry rows: registered models and their integer versions.

Every statement here goes straight through the driver (a DBAPI cursor from
:meth:`Database.raw_write` / :meth:`Database.raw_read`): registering,
moving a stage or an alias and resolving one are each a handful of indexed
statements, so even a thin wrapper's per-statement cost would show. The SQL
is portable (``?`` is rewritten per driver).

Every change of a model's versions, stages or aliases holds the model's lock
(:meth:`RawModels.lock`, see :mod:`keel.meta.refs`) from the start of its
transaction, so versions are numbered without duplicates and each reflog
row's ``old`` is what the move replaced.

A version's stage is a column; every stage change is appended to the shared
reflog as ref ``stage:<version>`` (old stage -> new stage). Aliases are
ordinary refs of kind ``model`` (target: the version number as text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel.core.digests import model_version_digest, reflog_digest
from keel.core.entities import now_ms
from keel.meta.digests import chain_previous
from keel.meta.engine import Database
from keel.meta.events import record_event
from keel.meta.protection import guard
from keel.meta.refs import EntityLock, RefMove, check_expected, move_data, move_subject

__all__ = ["KIND", "ModelRow", "RawModels", "Tombstone", "VersionRow", "stage_ref"]

KIND = "model"


def stage_ref(version: int) -> str:
    """The reflog ref under which a version's stage changes are recorded."""
    return f"stage:{version}"


@dataclass(frozen=True)
class ModelRow:
    """A stored registered model."""

    id: int
    name: str
    description: str
    tags: dict[str, str]
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class VersionRow:
    """A stored model version (card still as JSON data)."""

    name: str
    version: int
    source: str
    run_id: str | None
    stage: str
    description: str
    tags: dict[str, str]
    card: dict[str, Any]
    card_text: str | None
    author: str
    created_at: int
    updated_at: int
    id: int
    source_digest: str | None = None

    def to_json(self) -> str:
        """The row as JSON, for a tombstone (:meth:`RawModels.bury`)."""
        return _json({k: v for k, v in self.__dict__.items() if k != "id"})

    @staticmethod
    def from_json(text: str) -> VersionRow:
        """A tombstone's row back (``id`` 0: the row is gone)."""
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in VersionRow.__dataclass_fields__}
        return VersionRow(**{**known, "id": 0})


@dataclass(frozen=True)
class Tombstone:
    """A deleted version: its row as it was, when it was deleted and by whom."""

    row: VersionRow
    deleted_at: int
    deleted_by: str


_V = (
    "SELECT m.name, v.version, v.source, v.run_id, v.stage, v.description, v.tags, v.card, v.card_text, "
    "v.author, v.created_at, v.updated_at, v.id, v.source_digest "
    "FROM model_versions v JOIN registered_models m ON m.id = v.model_id "
)
_SQL = {
    "model": "SELECT id, name, description, tags, created_at, updated_at FROM registered_models WHERE name = ?",
    "models": "SELECT id, name, description, tags, created_at, updated_at FROM registered_models ORDER BY name",
    "new_model": (
        "INSERT INTO registered_models (name, description, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
    ),
    "touch_model": "UPDATE registered_models SET updated_at = ? WHERE id = ?",
    "update_model": "UPDATE registered_models SET description = ?, tags = ?, updated_at = ? WHERE id = ?",
    "max_version": "SELECT MAX(version) FROM model_versions WHERE model_id = ?",
    "max_deleted": (
        "SELECT old_target FROM reflog WHERE kind = 'model' AND name = ? AND ref >= 'version:' AND ref < 'version;'"
    ),
    "new_version": (
        "INSERT INTO model_versions (model_id, version, source, run_id, stage, description, tags, card, card_text, "
        "author, created_at, updated_at, digest, source_digest) VALUES (?, ?, ?, ?, 'None', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "version": _V + "WHERE m.name = ? AND v.version = ?",
    "latest": _V + "WHERE m.name = ? ORDER BY v.version DESC LIMIT 1",
    "in_stage": _V + "WHERE m.name = ? AND v.stage = ? ORDER BY v.version DESC LIMIT 1",
    "versions": _V + "WHERE m.name = ? ORDER BY v.version DESC",
    "stage_peers": (
        "SELECT id, version, updated_at FROM model_versions WHERE model_id = ? AND stage = ? AND version <> ? "
        "ORDER BY version DESC"
    ),
    "set_stage": "UPDATE model_versions SET stage = ?, updated_at = ? WHERE id = ?",
    "update_version": "UPDATE model_versions SET description = ?, tags = ?, updated_at = ? WHERE id = ?",
    "aliases": "SELECT ref, target FROM refs WHERE kind = 'model' AND name = ?",
    "alias": "SELECT target FROM refs WHERE kind = 'model' AND name = ? AND ref = ?",
    "alias_moved": "SELECT target, updated_at FROM refs WHERE kind = 'model' AND name = ? AND ref = ?",
    "new_alias": "INSERT INTO refs (kind, name, ref, target, updated_at) VALUES ('model', ?, ?, ?, ?)",
    "move_alias": "UPDATE refs SET target = ?, updated_at = ? WHERE kind = 'model' AND name = ? AND ref = ?",
    "drop_alias": "DELETE FROM refs WHERE kind = 'model' AND name = ? AND ref = ?",
    "drop_version": "DELETE FROM model_versions WHERE id = ?",
    "drop_versions": "DELETE FROM model_versions WHERE model_id = ?",
    "drop_model": "DELETE FROM registered_models WHERE id = ?",
    "log": (
        "INSERT INTO reflog (kind, name, ref, old_target, new_target, at, who, reason, digest) "
        "VALUES ('model', ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "history": (
        "SELECT ref, old_target, new_target, at, who, reason, id FROM reflog WHERE kind = 'model' AND name = ? "
        "ORDER BY at, id"
    ),
    "moves_until": ("SELECT ref, new_target FROM reflog WHERE kind = 'model' AND name = ? AND at <= ? ORDER BY at, id"),
    "bury": (
        "INSERT INTO model_version_tombstones (model_name, version, row, deleted_at, deleted_by) VALUES (?, ?, ?, ?, ?)"
    ),
    "tombstones_after": (
        "SELECT version, row, deleted_at, deleted_by FROM model_version_tombstones WHERE model_name = ? "
        "AND deleted_at > ? ORDER BY deleted_at, id"
    ),
    "pinned": _V + "WHERE v.source_digest IS NOT NULL ORDER BY m.name, v.version",
    "run_pk": "SELECT id FROM runs WHERE run_id = ?",
    "artifact": "SELECT 1 FROM artifacts WHERE run_pk = ? AND (path = ? OR (path > ? AND path < ?)) LIMIT 1",
    "any_artifact": "SELECT 1 FROM artifacts WHERE run_pk = ? LIMIT 1",
    "output_edge": (
        "INSERT INTO lineage (run_pk, direction, entity_kind, entity_id, entity_version, role, created_at) "
        "VALUES (?, 'output', 'model', ?, ?, 'registered', ?)"
    ),
    "versions_of_run": _V + "WHERE v.run_id = ? ORDER BY m.name, v.version",
}


def _model(row: Any) -> ModelRow:
    return ModelRow(int(row[0]), row[1], row[2], json.loads(row[3]), int(row[4]), int(row[5]))


def _version(row: Any) -> VersionRow:
    return VersionRow(
        row[0],
        int(row[1]),
        row[2],
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        json.loads(row[7]),
        row[8],
        row[9],
        int(row[10]),
        int(row[11]),
        int(row[12]),
        row[13],
    )


def _fetch(cur: Any, sql: str, args: Any) -> list[Any]:
    cur.execute(sql, tuple(args))
    return list(cur.fetchall())


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=True)


class RawModels:
    """The registry's statements, prepared once per database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.sql = {key: db.sql(text) for key, text in _SQL.items()}
        self._lock = EntityLock(db)

    def lock(self, cur: Any, name: str) -> None:
        """Hold the model's lock until the transaction ends; take it before reading what a
        change depends on (see :mod:`keel.meta.refs`)."""
        self._lock(cur, KIND, name)

    # -- registered models ----------------------------------------------------------
    def model(self, cur: Any, name: str) -> ModelRow | None:
        """A registered model, or None."""
        cur.execute(self.sql["model"], (name,))
        row = cur.fetchone()
        return None if row is None else _model(row)

    def models(self, cur: Any) -> list[ModelRow]:
        """Every registered model, by name."""
        cur.execute(self.sql["models"], ())
        return [_model(row) for row in cur.fetchall()]

    def create_model(self, cur: Any, name: str, description: str, tags: dict[str, str]) -> ModelRow:
        """Insert a registered model (the caller checked it does not exist)."""
        at = now_ms()
        cur.execute(self.sql["new_model"], (name, description, _json(tags), at, at))
        found = self.model(cur, name)
        assert found is not None
        return found

    def update_model(self, cur: Any, model_id: int, description: str, tags: dict[str, str]) -> None:
        """Replace a model's description and tags."""
        cur.execute(self.sql["update_model"], (description, _json(tags), now_ms(), model_id))

    # -- versions -----------------------------------------------------------------------
    def insert_version(
        self,
        cur: Any,
        name: str,
        model_id: int,
        source: str,
        run_id: str | None,
        description: str,
        tags: dict[str, str],
        card: dict[str, Any],
        card_text: str | None,
        author: str,
        source_digest: str | None = None,
    ) -> tuple[int, int]:
        """Insert the next version of a model; returns ``(version, created_at)``.

        Touching the model row first takes its row lock on PostgreSQL (SQLite
        writers are already serialised by ``BEGIN IMMEDIATE``), so two
        concurrent registrations never pick the same number.
        """
        at = now_ms()
        cur.execute(self.sql["touch_model"], (at, model_id))
        cur.execute(self.sql["max_version"], (model_id,))
        latest = cur.fetchone()[0]
        highest = 0 if latest is None else int(latest)
        cur.execute(self.sql["max_deleted"], (name,))  # deleted numbers are never reused
        for (old,) in cur.fetchall():
            if old is not None and str(old).isdigit():
                highest = max(highest, int(old))
        version = highest + 1
        card_json = _json(card)
        digest = model_version_digest(name, version, source, run_id, card_json, card_text, author, at)
        cur.execute(
            self.sql["new_version"],
            (
                model_id,
                version,
                source,
                run_id,
                description,
                _json(tags),
                card_json,
                card_text,
                author,
                at,
                at,
                digest,
                source_digest,
            ),  # fmt: skip
        )
        record_event(cur, "version.created", project=None, subject={"kind": KIND, "name": name, "version": version})
        return version, at

    def _one(self, cur: Any, key: str, args: tuple[Any, ...]) -> VersionRow | None:
        cur.execute(self.sql[key], args)
        row = cur.fetchone()
        return None if row is None else _version(row)

    def version(self, cur: Any, name: str, version: int) -> VersionRow | None:
        """One version, or None."""
        return self._one(cur, "version", (name, version))

    def latest(self, cur: Any, name: str) -> VersionRow | None:
        """The highest version, or None."""
        return self._one(cur, "latest", (name,))

    def in_stage(self, cur: Any, name: str, stage: str) -> VersionRow | None:
        """The highest version in a stage, or None."""
        return self._one(cur, "in_stage", (name, stage))

    def by_alias(self, cur: Any, name: str, alias: str) -> VersionRow | None:
        """The version an alias points at, or None (two unique-index probes)."""
        target = self.alias(cur, name, alias)
        return None if target is None else self.version(cur, name, target)

    def versions(self, cur: Any, name: str) -> list[VersionRow]:
        """Every version, newest first."""
        cur.execute(self.sql["versions"], (name,))
        return [_version(row) for row in cur.fetchall()]

    def versions_of_run(self, cur: Any, run_id: str) -> list[VersionRow]:
        """The versions registered from one run."""
        cur.execute(self.sql["versions_of_run"], (run_id,))
        return [_version(row) for row in cur.fetchall()]

    def update_version(self, cur: Any, version_id: int, description: str, tags: dict[str, str]) -> None:
        """Replace a version's description and tags (the only mutable fields)."""
        cur.execute(self.sql["update_version"], (description, _json(tags), now_ms(), version_id))

    # -- stages ---------------------------------------------------------------------------
    def stage_peers(self, cur: Any, model_id: int, stage: str, version: int) -> list[tuple[int, int, int]]:
        """``(row id, version, updated_at)`` of the other versions in a stage."""
        cur.execute(self.sql["stage_peers"], (model_id, stage, version))
        return [(int(i), int(v), int(u)) for i, v, u in cur.fetchall()]

    def set_stage(self, cur: Any, version_id: int, stage: str, at: int | None = None) -> int:
        """Set a version's stage (at ``at``, default now); returns the time."""
        at = now_ms() if at is None else at
        cur.execute(self.sql["set_stage"], (stage, at, version_id))
        return at

    # -- aliases and the reflog ---------------------------------------------------------
    def aliases(self, cur: Any, name: str) -> dict[str, int]:
        """``{alias: version}``."""
        cur.execute(self.sql["aliases"], (name,))
        return {ref: int(target) for ref, target in cur.fetchall()}

    def alias(self, cur: Any, name: str, alias: str) -> int | None:
        """The version an alias points at now, or None."""
        cur.execute(self.sql["alias"], (name, alias))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def history(self, cur: Any, name: str) -> list[RefMove]:
        """Every reflog entry of a model, oldest first, each with its id."""
        cur.execute(self.sql["history"], (name,))
        return [
            RefMove(KIND, name, r, old, new, int(at), who, why, int(i))
            for r, old, new, at, who, why, i in cur.fetchall()
        ]

    def refs_at(self, cur: Any, name: str, when: int) -> dict[str, str | None]:
        """``{ref: target}`` of every ref of a model as of ``when`` (its last move at or before it;
        None: removed then). Aliases, ``stage:<n>``, ``version:<n>`` and ``model`` alike."""
        cur.execute(self.sql["moves_until"], (name, when))
        return dict(cur.fetchall())

    # -- tombstones -----------------------------------------------------------------------
    def bury(self, cur: Any, row: VersionRow, at: int, who: str) -> None:
        """Keep a version's row (as it is now) before it is deleted, so "as of T" still finds it."""
        cur.execute(self.sql["bury"], (row.name, row.version, row.to_json(), at, who))

    def tombstones_after(self, cur: Any, name: str, when: int) -> dict[int, Tombstone]:
        """``{version: tombstone}`` of the versions of ``name`` deleted after ``when``: for each
        number the first deletion after it, the one of the version that was live at ``when``
        (a name deleted and registered again may have several of one number)."""
        cur.execute(self.sql["tombstones_after"], (name, when))
        out: dict[int, Tombstone] = {}
        for version, text, deleted_at, deleted_by in cur.fetchall():
            out.setdefault(int(version), Tombstone(VersionRow.from_json(text), int(deleted_at), deleted_by or ""))
        return out

    def pinned(self, cur: Any) -> list[VersionRow]:
        """Every live version that records its source's digest (for ``keel verify``)."""
        cur.execute(self.sql["pinned"], ())
        return [_version(row) for row in cur.fetchall()]

    def set_alias(
        self, cur: Any, name: str, alias: str, version: int, who: str, reason: str, expected: str | None = None
    ) -> RefMove:
        """Point an alias at a version and log the move (the caller holds the model's lock).
        ``expected``: the version (as text) the caller believes it points at; ``""``: unset."""
        cur.execute(self.sql["alias_moved"], (name, alias))
        found = cur.fetchone()
        old = None if found is None else int(found[0])
        check_expected(f"alias {alias!r} of model {name!r}", None if old is None else str(old), expected)
        at = now_ms() if found is None else max(now_ms(), int(found[1]))  # never before the previous move
        if old is None:
            cur.execute(self.sql["new_alias"], (name, alias, str(version), at))
        else:
            cur.execute(self.sql["move_alias"], (str(version), at, name, alias))
        return self.log(cur, name, alias, None if old is None else str(old), str(version), who, reason, at)

    def drop_version(self, cur: Any, version_id: int) -> None:
        """Delete one version row (the caller logs it and removes its aliases)."""
        cur.execute(self.sql["drop_version"], (version_id,))

    def drop_model(self, cur: Any, model_id: int) -> None:
        """Delete a registered model and its versions (the caller logs it and removes aliases)."""
        cur.execute(self.sql["drop_versions"], (model_id,))
        cur.execute(self.sql["drop_model"], (model_id,))

    def drop_alias(self, cur: Any, name: str, alias: str, old: int, who: str, reason: str) -> RefMove:
        """Remove an alias and log it."""
        cur.execute(self.sql["drop_alias"], (name, alias))
        return self.log(cur, name, alias, str(old), None, who, reason, now_ms())

    def log(
        self, cur: Any, name: str, ref: str, old: str | None, new: str | None, who: str, reason: str, at: int
    ) -> RefMove:
        """Append one reflog entry (chained to the ref's previous one: see :mod:`keel.meta.refs`),
        once :func:`keel.meta.protection.guard` let the move pass."""
        guard(lambda sql, args: _fetch(cur, self.db.sql(sql), args), KIND, name, ref, old, new)
        previous = chain_previous(cur, self.db, KIND, name, ref)
        digest = reflog_digest(previous, KIND, name, ref, old, new, at, who, reason)
        cur.execute(self.sql["log"], (name, ref, old, new, at, who, reason, digest))
        move = RefMove(KIND, name, ref, old, new, at, who, reason)
        record_event(cur, "alias.moved", project=None, subject=move_subject(move), data=move_data(move))
        return move

    # -- runs -----------------------------------------------------------------------------
    def run_pk(self, cur: Any, run_id: str) -> int | None:
        """The surrogate key of a run, or None."""
        cur.execute(self.sql["run_pk"], (run_id,))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def has_artifact(self, cur: Any, run_pk: int, path: str) -> bool:
        """True if the run has an artifact at ``path`` or under it (``""``: any artifact)."""
        if not path:
            cur.execute(self.sql["any_artifact"], (run_pk,))
        else:
            # Under the folder: "path/" <= p < "path0" ('0' follows '/').
            cur.execute(self.sql["artifact"], (run_pk, path, path + "/", path + "0"))
        return cur.fetchone() is not None

    def link_output(self, cur: Any, run_pk: int, name: str, version: int) -> None:
        """Record the version as an output of the run that produced it."""
        cur.execute(self.sql["output_edge"], (run_pk, name, str(version), now_ms()))
