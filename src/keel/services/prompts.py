"""The prompt registry: register versions, aliases with audit and rollback, diffs.

Rules (see :data:`keel.core.prompt_content.BUMP_RULE`): versions are
semantic and must increase by at least the bump the change requires;
identical content returns the existing version; every version carries a
changelog entry; aliases are refs whose every move is in the reflog.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keel.core.names import check_name
from keel.core.prompt_content import BUMP_RULE, PromptContent, PromptDiff, diff_prompts, required_bump
from keel.core.semver import BUMPS, SemVer
from keel.errors import Conflict, InvalidInput, NotFound
from keel.meta.prompts import KIND, PromptStore, RawPrompts, VersionRow
from keel.meta.refs import ABSENT, RefMove, Refs
from keel.services.audit import to_ms
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.workspace import Store

__all__ = ["PromptService", "PromptVersion", "RefMove", "is_version", "parse_prompt_ref"]

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
_ORDER = {"patch": 0, "minor": 1, "major": 2}


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version of a prompt, as registered."""

    name: str
    version: str
    content: PromptContent
    content_hash: str
    changelog: str
    author: str
    created_at: int
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "version": self.version,
            "content": self.content.to_dict(),
            "variables": list(self.content.variables),
            "content_hash": self.content_hash,
            "changelog": self.changelog,
            "author": self.author,
            "created_at": self.created_at,
            "aliases": list(self.aliases),
        }


def parse_prompt_ref(ref: str) -> tuple[str, str | None]:
    """``"chat@production"`` -> ``("chat", "production")``; ``"chat"`` -> ``("chat", None)``."""
    name, sep, selector = str(ref).partition("@")
    if not name or (sep and not selector):
        raise InvalidInput(f"invalid prompt reference {ref!r}", "write NAME, NAME@VERSION or NAME@ALIAS")
    return name, (selector or None)


def check_alias(alias: str) -> str:
    """Validate an alias name (``latest`` is implicit and cannot be set)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidInput(f"invalid alias {alias!r}", "aliases start with a letter: production, staging, champion")
    if alias == "latest":
        raise InvalidInput("'latest' is implicit (the highest version) and cannot be set", "choose another alias")
    if _looks_like_version(alias):
        raise InvalidInput(f"alias {alias!r} looks like a version", "choose a name such as production")
    return alias


def is_version(text: str | None) -> bool:
    """True if a selector names a version (``1.3.0``, ``v1.3``) rather than an alias."""
    return bool(text) and bool(re.fullmatch(r"v?\d+(\.\d+){1,2}", text or ""))


_looks_like_version = is_version


def _expected_version(expected: str | None) -> str | None:
    """An alias move's ``expected`` target, normalised: None (no check), ``""`` (unset) or a version."""
    if expected is None or expected == ABSENT:
        return expected
    if not isinstance(expected, str) or not is_version(expected):
        raise InvalidInput(
            f"expected {expected!r} is not a version",
            "give the version the alias points at now (e.g. 1.3.0), or '' if it must not be set yet",
        )
    return str(SemVer.parse(expected))


@service("prompts")
class PromptService:
    """Prompt use cases over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db
        self.raw = RawPrompts(store.db)

    def _version(self, row: VersionRow, aliases: Mapping[str, str] | None = None) -> PromptVersion:
        names = tuple(sorted(a for a, target in (aliases or {}).items() if target == row.version))
        return PromptVersion(
            row.name,
            row.version,
            PromptContent.from_stored(row.content),
            row.content_hash,
            row.changelog,
            row.author,
            row.created_at,
            names,
        )

    # -- registering -------------------------------------------------------------
    @operation("writer")
    def register(
        self,
        name: str,
        template: Any,
        model: str = "",
        parameters: Mapping[str, Any] | None = None,
        few_shot: Any = None,
        response_schema: Any = None,
        changelog: str = "",
        bump: str | None = None,
        version: str | None = None,
        author: str | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Register a version; returns it and whether it was created (False: identical
        content already registered, the existing version is returned)."""
        check_name(name, "prompt name")
        if bump is not None and bump not in BUMPS:
            raise InvalidInput(f"invalid bump {bump!r}", "use major, minor or patch")
        if bump is not None and version is not None:
            raise InvalidInput("give bump= or version=, not both", "bump='minor' or version='1.4.0'")
        content = PromptContent.create(
            template=template,
            model=model,
            parameters=dict(parameters or {}),
            few_shot=few_shot,
            response_schema=response_schema,
        )
        variables = content.variables  # checks the template: syntax errors surface here
        stored = content.to_dict()
        content_hash = content.content_hash()
        explicit = SemVer.parse(version) if version is not None else None
        entry = str(changelog).strip()
        with self.db.raw_write() as cur:
            self.raw.lock(cur, name)  # concurrent registrations of this name queue here
            existing = self.raw.by_hash(cur, name, content_hash)
            if existing is not None:
                return self._version(existing, self.raw.aliases(cur, name)), False
            if not entry:
                raise InvalidInput(
                    f"registering a new version of {name!r} needs a changelog entry",
                    "say why it changed: changelog='Tighten refusal wording'",
                )
            latest = self.raw.latest(cur, name)
            if latest is None:
                new = explicit or SemVer(1, 0, 0)
            else:
                new = self._next_version(name, latest, content, bump, explicit)
            author_name = audit_who(author)
            created = self.raw.insert(
                cur,
                name,
                str(new),
                (new.major, new.minor, new.patch),
                stored,
                content_hash,
                variables,
                entry,
                author_name,
            )
        # A version created just now has no aliases yet.
        return PromptVersion(name, str(new), content, content_hash, entry, author_name, created), True

    @staticmethod
    def _next_version(
        name: str, latest: VersionRow, content: PromptContent, bump: str | None, explicit: SemVer | None
    ) -> SemVer:
        needed = required_bump(PromptContent.from_dict(latest.content), content) or "patch"
        current = SemVer.parse(latest.version)
        if explicit is not None:
            kind = explicit.kind_of_change(current)
            if kind is None:
                raise InvalidInput(
                    f"version {explicit} of {name!r} does not increase on the latest, {current}",
                    f"use a version above {current}, e.g. {current.bump(needed)}",
                )
        else:
            kind = bump or needed
        if _ORDER[kind] < _ORDER[needed]:
            raise Conflict(
                f"this change to {name!r} needs a {needed} bump (at least {current.bump(needed)}), "
                f"not a {kind} one. {BUMP_RULE}",
                f"register with bump={needed!r}",
            )
        return explicit if explicit is not None else current.bump(kind)

    # -- reading ----------------------------------------------------------------------
    @operation("reader")
    def resolve(self, name: str, selector: str | None = None, at: int | float | datetime | None = None) -> str:
        """The version a selector means: a version, an alias (optionally as of ``at``), or latest."""
        with self.db.read() as conn:
            return self._resolve(conn, name, selector, at)

    def _resolve(self, conn: Any, name: str, selector: str | None, at: int | float | datetime | None = None) -> str:
        if selector is None or selector == "latest":
            if at is not None:
                raise InvalidInput(
                    f"at= asks what an alias of {name!r} pointed at, and no alias was given",
                    f"name the alias: keel.prompts.resolve({name!r}, 'production', at=...)",
                )
            latest = PromptStore.latest(conn, name)
            if latest is None:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            return latest.version
        if _looks_like_version(selector):
            return str(SemVer.parse(selector))
        if at is not None:
            target = Refs.at(conn, KIND, name, selector, to_ms(at))
            if target is None:
                raise NotFound(f"alias {selector!r} of {name!r} pointed nowhere at that time", "check the time")
            return target
        target = Refs.current(conn, KIND, name, selector)
        if target is None:
            if PromptStore.prompt_id(conn, name) is None:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            raise NotFound(f"prompt {name!r} has no alias {selector!r}", f"see its aliases: keel prompts show {name}")
        return target

    @operation("reader")
    def get(self, name: str, selector: str | None = None, at: int | float | datetime | None = None) -> PromptVersion:
        """Load one version by version, alias (optionally as of ``at``) or latest."""
        if at is None:
            return self._get_now(name, selector)
        with self.db.read() as conn:
            version = self._resolve(conn, name, selector, at)
            return self._version(PromptStore.get(conn, name, version), Refs.all_for(conn, KIND, name))

    def _get_now(self, name: str, selector: str | None) -> PromptVersion:
        """:meth:`get` without ``at``: one short read transaction straight through the driver."""
        with self.db.raw_read() as cur:
            if selector is None or selector == "latest":
                row = self.raw.latest(cur, name)
            elif is_version(selector):
                row = self.raw.version(cur, name, str(SemVer.parse(selector)))
            else:
                target = self.raw.alias(cur, name, selector)
                if target is None:
                    if not self.raw.exists(cur, name):
                        raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
                    raise NotFound(
                        f"prompt {name!r} has no alias {selector!r}", f"see its aliases: keel prompts show {name}"
                    )
                row = self.raw.version(cur, name, target)
            if row is None:
                if not self.raw.exists(cur, name):
                    raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
                raise NotFound(
                    f"prompt {name!r} has no version {selector}", f"list them with 'keel prompts log {name}'"
                )
            return self._version(row, self.raw.aliases(cur, name))

    @operation("reader")
    def versions(self, name: str) -> list[PromptVersion]:
        """Every version, newest first, with its aliases."""
        with self.db.raw_read() as cur:
            rows = self.raw.versions(cur, name)
            if not rows:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            aliases = self.raw.aliases(cur, name)
        return [self._version(row, aliases) for row in rows]

    @operation("reader")
    def list_prompts(self) -> list[tuple[str, PromptVersion]]:
        """Every prompt with its latest version."""
        with self.db.read() as conn:
            out = []
            for name, _description in PromptStore.names(conn):
                latest = PromptStore.latest(conn, name)
                if latest is not None:
                    out.append((name, self._version(latest, Refs.all_for(conn, KIND, name))))
        return out

    @operation("reader")
    def diff(self, name: str, a: str, b: str) -> PromptDiff:
        """What changed between two versions (or aliases) of a prompt."""
        old, new = self.get(name, a), self.get(name, b)
        return diff_prompts(old.content, new.content, old.ref, new.ref)

    # -- aliases ----------------------------------------------------------------------
    @operation("writer")
    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        reason: str = "",
        who: str | None = None,
        expected: str | None = None,
    ) -> RefMove:
        """Point ``alias`` at an existing version (logged with who and why).

        ``expected``: the version the caller believes the alias points at now (``""``:
        not set yet); if it points elsewhere, Conflict naming where, and nothing moves.
        """
        check_alias(alias)
        wanted = _expected_version(expected)
        with self.db.write() as conn:
            # Versions are immutable: only the alias's own read must be locked, and Refs.set does that.
            target = str(SemVer.parse(version)) if _looks_like_version(version) else self._resolve(conn, name, version)
            PromptStore.get(conn, name, target)  # must exist
            return Refs.set(conn, KIND, name, alias, target, audit_who(who), reason, expected=wanted)

    @operation("writer")
    def delete_alias(
        self, name: str, alias: str, reason: str = "", who: str | None = None, expected: str | None = None
    ) -> RefMove:
        """Remove an alias (logged); with ``expected``, only if it points at that version."""
        check_alias(alias)
        wanted = _expected_version(expected)
        with self.db.write() as conn:
            return Refs.delete(conn, KIND, name, alias, audit_who(who), reason, expected=wanted)

    @operation("writer")
    def rollback(
        self, name: str, alias: str, reason: str = "", who: str | None = None, expected: str | None = None
    ) -> RefMove:
        """Move ``alias`` back to the target it had before its latest move; with ``expected``,
        only if it still points at that version."""
        check_alias(alias)
        wanted = _expected_version(expected)
        with self.db.write() as conn:
            Refs.lock(conn, KIND, name)  # the history read below is the one the move extends
            moves = Refs.history(conn, KIND, name, alias)
            previous = Refs.previous(moves)
            if previous is None:
                raise Conflict(
                    f"alias {alias!r} of {name!r} has no earlier target to roll back to",
                    f"see its history: keel prompts alias history {name} {alias}",
                )
            return Refs.set(
                conn, KIND, name, alias, previous, audit_who(who), reason or f"rollback of {alias}", expected=wanted
            )

    @operation("reader")
    def history(self, name: str, alias: str | None = None) -> list[RefMove]:
        """The reflog of a prompt's aliases (or one alias), oldest first."""
        with self.db.read() as conn:
            return Refs.history(conn, KIND, name, alias)
