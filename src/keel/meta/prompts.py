"""Prompt registry rows: prompts and their immutable versions.

A version row holds the content as canonical JSON plus its hash, so loading
a version is one indexed query and registering identical content again
finds the existing version by hash. Aliases live in the shared ``refs``
table (kind ``prompt``); see :mod:`keel.meta.refs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select

from keel.core.entities import now_ms
from keel.errors import NotFound
from keel.meta.engine import Database
from keel.meta.schema import prompt_versions, prompts

__all__ = ["PromptStore", "VersionRow"]

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


_COLUMNS = (
    prompts.c.name,
    prompt_versions.c.version,
    prompt_versions.c.content,
    prompt_versions.c.content_hash,
    prompt_versions.c.variables,
    prompt_versions.c.changelog,
    prompt_versions.c.author,
    prompt_versions.c.created_at,
)
_SEMVER_DESC = (prompt_versions.c.major.desc(), prompt_versions.c.minor.desc(), prompt_versions.c.patch.desc())


def _row(row: Any) -> VersionRow:
    return VersionRow(
        row[0], row[1], json.loads(row[2]), row[3], tuple(json.loads(row[4])), row[5], row[6], int(row[7])
    )


def _joined() -> Any:
    return select(*_COLUMNS).select_from(prompt_versions.join(prompts, prompts.c.id == prompt_versions.c.prompt_id))


class PromptStore:
    """Queries and inserts over ``prompts`` and ``prompt_versions``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def prompt_id(conn: Any, name: str, create: bool = False) -> int | None:
        """The id of prompt ``name`` (created if asked), or None."""
        found = conn.execute(select(prompts.c.id).where(prompts.c.name == name)).scalar()
        if found is None and create:
            found = conn.execute(insert(prompts).values(name=name, created_at=now_ms())).inserted_primary_key[0]
        return None if found is None else int(found)

    @staticmethod
    def latest(conn: Any, name: str) -> VersionRow | None:
        """The highest version of a prompt, or None."""
        row = conn.execute(_joined().where(prompts.c.name == name).order_by(*_SEMVER_DESC).limit(1)).first()
        return None if row is None else _row(row)

    @staticmethod
    def by_hash(conn: Any, name: str, content_hash: str) -> VersionRow | None:
        """The version of ``name`` with this content, or None."""
        row = conn.execute(
            _joined().where(prompts.c.name == name, prompt_versions.c.content_hash == content_hash).limit(1)
        ).first()
        return None if row is None else _row(row)

    @staticmethod
    def get(conn: Any, name: str, version: str) -> VersionRow:
        """One version; raise NotFound naming what exists."""
        row = conn.execute(_joined().where(prompts.c.name == name, prompt_versions.c.version == version)).first()
        if row is None:
            if PromptStore.prompt_id(conn, name) is None:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            raise NotFound(f"prompt {name!r} has no version {version}", f"list them with 'keel prompts log {name}'")
        return _row(row)

    @staticmethod
    def insert_version(
        conn: Any,
        prompt_id: int,
        version: str,
        parts: tuple[int, int, int],
        content: dict[str, Any],
        content_hash: str,
        variables: tuple[str, ...],
        changelog: str,
        author: str,
    ) -> int:
        """Insert a new immutable version; returns its creation time."""
        created = now_ms()
        conn.execute(
            insert(prompt_versions).values(
                prompt_id=prompt_id,
                version=version,
                major=parts[0],
                minor=parts[1],
                patch=parts[2],
                content=json.dumps(content, sort_keys=True, separators=(",", ":")),
                content_hash=content_hash,
                variables=json.dumps(list(variables)),
                changelog=changelog,
                author=author,
                created_at=created,
            )
        )
        return created

    @staticmethod
    def versions(conn: Any, name: str) -> list[VersionRow]:
        """Every version of a prompt, newest first."""
        return [_row(r) for r in conn.execute(_joined().where(prompts.c.name == name).order_by(*_SEMVER_DESC))]

    @staticmethod
    def names(conn: Any) -> list[tuple[str, str]]:
        """``(name, description)`` of every prompt, by name."""
        return [(n, d) for n, d in conn.execute(select(prompts.c.name, prompts.c.description).order_by(prompts.c.name))]
