"""Prompt registry rows: prompts and their immutable versions.

A version row holds the content as canonical JSON plus its hash, so loading
a version is one indexed query and registering identical content again
finds the existing version by hash (a revert makes a new version with the
content of an older one, so one hash may have several versions: the highest
is found). Aliases live in the shared ``refs``
table (kind ``prompt``); see :mod:`keel.meta.refs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keel.core.digests import prompt_version_digest
from keel.core.entities import now_ms
from keel.errors import NotFound
from keel.meta.engine import Database
from keel.meta.events import record_event
from keel.meta.refs import EntityLock

__all__ = ["PromptStore", "RawPrompts", "VersionRow"]

KIND = "prompt"


@dataclass(frozen=True)
class VersionRow:
    """A stored prompt version (content still as a JSON-ready dict)."""

    name: str
    version: str
    content: dict[str, Any]
    content_hash: str
    variables: tuple[str, ...]
    changelog: str
    author: str
    created_at: int


def _row(row: Any) -> VersionRow:
    return VersionRow(
        row[0], row[1], json.loads(row[2]), row[3], tuple(json.loads(row[4])), row[5], row[6], int(row[7])
    )


_SELECT = (
    "SELECT p.name, v.version, v.content, v.content_hash, v.variables, v.changelog, v.author, v.created_at "
    "FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id "
)
_BY_VERSION = _SELECT + "WHERE p.name = ? AND v.version = ?"
_LATEST = _SELECT + "WHERE p.name = ? ORDER BY v.major DESC, v.minor DESC, v.patch DESC LIMIT 1"
_LATEST_AT = (
    _SELECT + "WHERE p.name = ? AND v.created_at <= ? ORDER BY v.major DESC, v.minor DESC, v.patch DESC LIMIT 1"
)
_BY_HASH = _SELECT + "WHERE p.name = ? AND v.content_hash = ? ORDER BY v.major DESC, v.minor DESC, v.patch DESC LIMIT 1"
_ALL = _SELECT + "WHERE p.name = ? ORDER BY v.major DESC, v.minor DESC, v.patch DESC"
_ALIASES = "SELECT ref, target FROM refs WHERE kind = 'prompt' AND name = ?"
_ALIAS = "SELECT target FROM refs WHERE kind = 'prompt' AND name = ? AND ref = ?"
_PROMPT_ID = "SELECT id FROM prompts WHERE name = ?"
_NAMES = "SELECT name, description FROM prompts ORDER BY name"
_NEW_PROMPT = "INSERT INTO prompts (name, description, created_at) VALUES (?, '', ?) ON CONFLICT (name) DO NOTHING"
_NEW_VERSION = (
    "INSERT INTO prompt_versions (prompt_id, version, major, minor, patch, content, content_hash, variables, "
    "changelog, author, created_at, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class PromptStore:
    """Queries over ``prompts`` and ``prompt_versions`` inside the caller's transaction
    (as-of reads, alias moves, listings); the hot paths are :class:`RawPrompts`."""

    @staticmethod
    def prompt_id(conn: Any, name: str, create: bool = False) -> int | None:
        """The id of prompt ``name`` (created if asked), or None."""
        found = conn.execute(_PROMPT_ID, (name,)).scalar()
        if found is None and create:
            found = conn.execute(
                "INSERT INTO prompts (name, created_at) VALUES (?, ?) RETURNING id", (name, now_ms())
            ).scalar_one()
        return None if found is None else int(found)

    @staticmethod
    def latest(conn: Any, name: str) -> VersionRow | None:
        """The highest version of a prompt, or None."""
        row = conn.execute(_LATEST, (name,)).first()
        return None if row is None else _row(row)

    @staticmethod
    def latest_at(conn: Any, name: str, when: int) -> VersionRow | None:
        """The highest version registered at or before ``when`` (ms), or None: what
        ``latest`` meant at that time (versions are never deleted or renumbered)."""
        row = conn.execute(_LATEST_AT, (name, when)).first()
        return None if row is None else _row(row)

    @staticmethod
    def get(conn: Any, name: str, version: str) -> VersionRow:
        """One version; raise NotFound naming what exists."""
        row = conn.execute(_BY_VERSION, (name, version)).first()
        if row is None:
            if PromptStore.prompt_id(conn, name) is None:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            raise NotFound(f"prompt {name!r} has no version {version}", f"list them with 'keel prompts log {name}'")
        return _row(row)

    @staticmethod
    def names(conn: Any) -> list[tuple[str, str]]:
        """``(name, description)`` of every prompt, by name."""
        return [(n, d) for n, d in conn.execute(_NAMES).all()]


class RawPrompts:
    """The registry's hot paths (load, register) straight through the driver.

    A :class:`keel.meta.dbapi.Connection` adds a little per statement, which matters
    here next to the queries themselves; these take a DBAPI cursor from
    :meth:`Database.raw_read` / :meth:`Database.raw_write`. The SQL is portable
    (``?`` rewritten per driver).
    """

    def __init__(self, db: Database) -> None:
        self._lock = EntityLock(db)
        self.sql = {
            key: db.sql(text)
            for key, text in {
                "version": _BY_VERSION,
                "latest": _LATEST,
                "all": _ALL,
                "hash": _BY_HASH,
                "aliases": _ALIASES,
                "alias": _ALIAS,
                "prompt_id": _PROMPT_ID,
                "new_prompt": _NEW_PROMPT,
                "new_version": _NEW_VERSION,
            }.items()
        }

    def _one(self, cur: Any, key: str, args: tuple[Any, ...]) -> VersionRow | None:
        cur.execute(self.sql[key], args)
        row = cur.fetchone()
        return None if row is None else _row(row)

    def lock(self, cur: Any, name: str) -> None:
        """Hold the prompt's lock until the transaction ends (see :mod:`keel.meta.refs`)."""
        self._lock(cur, KIND, name)

    def version(self, cur: Any, name: str, version: str) -> VersionRow | None:
        """One version, or None."""
        return self._one(cur, "version", (name, version))

    def latest(self, cur: Any, name: str) -> VersionRow | None:
        """The highest version, or None."""
        return self._one(cur, "latest", (name,))

    def by_hash(self, cur: Any, name: str, content_hash: str) -> VersionRow | None:
        """The highest version with this content, or None."""
        return self._one(cur, "hash", (name, content_hash))

    def versions(self, cur: Any, name: str) -> list[VersionRow]:
        """Every version, newest first."""
        cur.execute(self.sql["all"], (name,))
        return [_row(row) for row in cur.fetchall()]

    def alias(self, cur: Any, name: str, alias: str) -> str | None:
        """The version an alias points at, or None."""
        cur.execute(self.sql["alias"], (name, alias))
        row = cur.fetchone()
        return None if row is None else str(row[0])

    def aliases(self, cur: Any, name: str) -> dict[str, str]:
        """``{alias: version}`` of a prompt."""
        cur.execute(self.sql["aliases"], (name,))
        return {ref: target for ref, target in cur.fetchall()}

    def exists(self, cur: Any, name: str) -> bool:
        """True if the prompt has been registered."""
        cur.execute(self.sql["prompt_id"], (name,))
        return cur.fetchone() is not None

    def insert(
        self,
        cur: Any,
        name: str,
        version: str,
        parts: tuple[int, int, int],
        content: dict[str, Any],
        content_hash: str,
        variables: tuple[str, ...],
        changelog: str,
        author: str,
    ) -> int:
        """Insert a version (creating the prompt if new); returns its creation time."""
        created = now_ms()
        cur.execute(self.sql["prompt_id"], (name,))
        row = cur.fetchone()
        if row is None:
            cur.execute(self.sql["new_prompt"], (name, created))
            cur.execute(self.sql["prompt_id"], (name,))
            row = cur.fetchone()
        content_json = json.dumps(content, sort_keys=True, separators=(",", ":"))
        variables_json = json.dumps(list(variables))
        stored = (version, parts, content_json, content_hash, variables_json, changelog, author, created)
        cur.execute(
            self.sql["new_version"],
            (
                int(row[0]),
                version,
                *parts,
                content_json,
                content_hash,
                variables_json,
                changelog,
                author,
                created,
                prompt_version_digest(name, *stored),
            ),
        )
        record_event(cur, "version.created", project=None, subject={"kind": KIND, "name": name, "version": version})
        return created
