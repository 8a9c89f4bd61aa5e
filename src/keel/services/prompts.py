"""The prompt registry: register versions, aliases with audit and rollback, diffs.

Rules (see :data:`keel.core.prompt_content.BUMP_RULE`): versions are
semantic and must increase by at least the bump the change requires; every
version carries a changelog entry; aliases are refs whose every move is in
the reflog (names: :mod:`keel.core.refnames`, case-insensitive and
case-preserving).

Registering content that is already registered (docs/prompts.md):

- no version given, content identical to the **latest** version: that version
  is returned (``created=False``): registering is idempotent;
- no version given, content identical to an **older** version: a revert, and
  as in git a revert is a new version, bumped by the usual rules (a patch when
  nothing else differs from the latest), its changelog ``Revert to X`` unless
  one is given;
- an explicit ``version`` that is already registered with this content: that
  version is returned; an explicit new ``version`` is created even when its
  content duplicates an existing version's (as MLflow does), and must be above
  the latest like any other.

"As of T" (``at=``, read by :func:`keel.core.times.parse_at`): an alias gives
where it pointed at T (from the reflog); ``latest`` gives the highest version
registered at or before T.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keel.core.names import check_name
from keel.core.prompt_content import BUMP_RULE, PromptContent, PromptDiff, diff_prompts, required_bump
from keel.core.refnames import check_alias, match_alias
from keel.core.semver import BUMPS, SemVer
from keel.core.times import format_at, parse_at
from keel.errors import Conflict, InvalidInput, NotFound
from keel.meta.prompts import KIND, PromptStore, RawPrompts, VersionRow
from keel.meta.refs import ABSENT, RefMove, Refs
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.workspace import Store

__all__ = ["PromptService", "PromptVersion", "RefMove", "check_alias", "is_version", "parse_prompt_ref"]

#: ``at=`` as the operations take it: see :func:`keel.core.times.parse_at` (a date too, in process).
At = int | float | str | datetime | None
#: The most moves one rollback undoes (a bound on the argument, far above any real history).
MAX_STEPS = 10_000
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


def is_version(text: str | None) -> bool:
    """True if a selector names a version (``1.3.0``, ``v1.3``) rather than an alias."""
    return bool(text) and bool(re.fullmatch(r"v?\d+(\.\d+){1,2}", text or ""))


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
        """Register a version; returns it and whether it was created (False: the content is
        the latest version's, or the explicit ``version`` is registered with it already).

        Content identical to an older version is a revert: a new version (see the module doc).
        """
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
            latest = self.raw.latest(cur, name)
            if explicit is not None:
                same = self.raw.version(cur, name, str(explicit))
                if same is not None and same.content_hash == content_hash:
                    return self._version(same, self.raw.aliases(cur, name)), False
            elif latest is not None and latest.content_hash == content_hash:
                return self._version(latest, self.raw.aliases(cur, name)), False
            if not entry:
                older = self.raw.by_hash(cur, name, content_hash) if latest is not None else None
                if older is None:
                    raise InvalidInput(
                        f"registering a new version of {name!r} needs a changelog entry",
                        "say why it changed: changelog='Tighten refusal wording'",
                    )
                entry = f"Revert to {older.version}"
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
    def resolve(self, name: str, selector: str | None = None, at: At = None) -> str:
        """The version a selector means: a version, an alias, or latest; with ``at``, what the
        alias (or latest) meant at that time (:func:`keel.core.times.parse_at`)."""
        when = None if at is None else parse_at(at)
        with self.db.read() as conn:
            return self._resolve(conn, name, selector, when)

    @staticmethod
    def _no_prompt(conn: Any, name: str) -> None:
        if PromptStore.prompt_id(conn, name) is None:
            raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")

    def _resolve(self, conn: Any, name: str, selector: str | None, when: int | None = None) -> str:
        if selector is None or selector == "latest":
            latest = PromptStore.latest(conn, name) if when is None else PromptStore.latest_at(conn, name, when)
            if latest is None:
                self._no_prompt(conn, name)
                raise NotFound(
                    f"no version of {name!r} existed at {format_at(when)}",
                    f"its first version is the oldest in 'keel prompts log {name}'; give a later time",
                )
            return latest.version
        if is_version(selector):
            return str(SemVer.parse(selector))
        if when is not None:
            spelled = match_alias(Refs.ever(conn, KIND, name), selector) or selector
            target = Refs.at(conn, KIND, name, spelled, when)
            if target is None:
                self._no_prompt(conn, name)
                raise NotFound(
                    f"alias {selector!r} of {name!r} pointed nowhere at {format_at(when)}",
                    f"see when it moved: keel prompts alias history {name} {selector}",
                )
            return target
        spelled = match_alias(Refs.all_for(conn, KIND, name), selector) or selector
        target = Refs.current(conn, KIND, name, spelled)
        if target is None:
            self._no_prompt(conn, name)
            raise NotFound(f"prompt {name!r} has no alias {selector!r}", f"see its aliases: keel prompts show {name}")
        return target

    @operation("reader")
    def get(self, name: str, selector: str | None = None, at: At = None) -> PromptVersion:
        """Load one version by version, alias or latest; with ``at``, the one the alias (or
        latest) meant at that time, with its aliases as of then."""
        if at is None:
            return self._get_now(name, selector)
        when = parse_at(at)
        with self.db.read() as conn:
            version = self._resolve(conn, name, selector, when)
            return self._version(PromptStore.get(conn, name, version), Refs.all_at(conn, KIND, name, when))

    def _get_now(self, name: str, selector: str | None) -> PromptVersion:
        """:meth:`get` without ``at``: one short read transaction straight through the driver."""
        with self.db.raw_read() as cur:
            if selector is None or selector == "latest":
                row = self.raw.latest(cur, name)
            elif is_version(selector):
                row = self.raw.version(cur, name, str(SemVer.parse(selector)))
            else:
                target = self.raw.alias(cur, name, selector)
                if target is None:  # another spelling of it? (aliases are case-insensitive)
                    aliases = self.raw.aliases(cur, name)
                    spelled = match_alias(aliases, selector)
                    target = None if spelled is None else aliases[spelled]
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
    def versions(self, name: str, at: At = None) -> list[PromptVersion]:
        """Every version, newest first, with its aliases; with ``at``, the versions registered
        by then, with their aliases as of then."""
        when = None if at is None else parse_at(at)
        with self.db.raw_read() as cur:
            rows = self.raw.versions(cur, name)
            if not rows:
                raise NotFound(f"no prompt named {name!r}", "list prompts with 'keel prompts list'")
            if when is None:
                return [self._version(row, self.raw.aliases(cur, name)) for row in rows]
        with self.db.read() as conn:
            aliases = Refs.all_at(conn, KIND, name, when)
        kept = [self._version(row, aliases) for row in rows if row.created_at <= when]
        if not kept:
            raise NotFound(
                f"no version of {name!r} existed at {format_at(when)}",
                f"its first version was registered at {format_at(rows[-1].created_at)}",
            )
        return kept

    @operation("reader")
    def aliases_at(self, name: str, at: At) -> dict[str, str]:
        """Every alias of a prompt as it was at time ``at``: ``{alias: version}`` (from the reflog)."""
        when = parse_at(at)
        with self.db.read() as conn:
            self._no_prompt(conn, name)
            return Refs.all_at(conn, KIND, name, when)

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
    @staticmethod
    def _spelling(conn: Any, name: str, alias: str, ever: bool = False) -> str:
        """The stored spelling of ``alias`` (aliases are case-insensitive, case-preserving):
        among the current aliases, or (``ever``) every alias the reflog has seen."""
        known = Refs.ever(conn, KIND, name) if ever else Refs.all_for(conn, KIND, name)
        return match_alias(known, alias) or alias

    @operation("writer")
    def set_alias(
        self,
        name: str,
        alias: str,
        version: str | None = None,
        reason: str = "",
        who: str | None = None,
        expected: str | None = None,
        at: At = None,
    ) -> RefMove:
        """Point ``alias`` at an existing version (logged with who and why); with ``at`` instead
        of ``version``, where the alias pointed at that time (git's ``reset`` to ``ref@{time}``).

        ``expected``: the version the caller believes the alias points at now (``""``:
        not set yet); if it points elsewhere, Conflict naming where, and nothing moves.
        Another spelling of an existing alias moves that alias (``Production`` moves ``production``).
        """
        check_alias(alias)
        wanted = _expected_version(expected)
        if (version is None) == (at is None):
            raise InvalidInput(
                "give a version or at=, not both" if version is not None else "give a version or at=",
                f"keel prompts alias set {name} {alias} 1.3.0, or --at 2026-12-07T10:00:00Z",
            )
        when = None if at is None else parse_at(at)
        with self.db.write() as conn:
            Refs.lock(conn, KIND, name)  # the spelling read below is the one the move uses
            spelled = self._spelling(conn, name, alias, ever=when is not None)
            if when is not None:
                target = Refs.at(conn, KIND, name, spelled, when)
                if target is None:
                    self._no_prompt(conn, name)
                    raise Conflict(
                        f"alias {alias!r} of {name!r} pointed nowhere at {format_at(when)}",
                        f"see when it moved: keel prompts alias history {name} {alias}",
                    )
                reason = reason or f"set to where it pointed at {format_at(when)}"
            else:
                # Versions are immutable: only the alias's own read must be locked, and Refs.set does that.
                assert version is not None
                target = str(SemVer.parse(version)) if is_version(version) else self._resolve(conn, name, version)
            PromptStore.get(conn, name, target)  # must exist
            return Refs.set(conn, KIND, name, spelled, target, audit_who(who), reason, expected=wanted)

    @operation("writer")
    def delete_alias(
        self, name: str, alias: str, reason: str = "", who: str | None = None, expected: str | None = None
    ) -> RefMove:
        """Remove an alias (logged); with ``expected``, only if it points at that version."""
        check_alias(alias)
        wanted = _expected_version(expected)
        with self.db.write() as conn:
            Refs.lock(conn, KIND, name)
            return Refs.delete(
                conn, KIND, name, self._spelling(conn, name, alias), audit_who(who), reason, expected=wanted
            )

    @operation("writer")
    def rollback(
        self,
        name: str,
        alias: str,
        reason: str = "",
        who: str | None = None,
        expected: str | None = None,
        steps: int = 1,
    ) -> RefMove:
        """Undo the alias's last ``steps`` moves: point it where it pointed before its
        ``steps``-th latest move (git's ``ref@{steps}``). The rollback is itself a move, so
        rolling back one step twice returns to where it started; see
        :meth:`keel.meta.refs.Refs.target_before`. With ``expected``, only if the alias still
        points at that version. Conflict (nothing moves) when the history is shorter.
        """
        check_alias(alias)
        if not isinstance(reason, str):
            raise InvalidInput(f"reason {reason!r} is not text", f"give the number of moves by name: steps={reason!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise InvalidInput(f"steps {steps!r} is not a number of moves", f"give 1 to {MAX_STEPS}: steps=2")
        wanted = _expected_version(expected)
        with self.db.write() as conn:
            Refs.lock(conn, KIND, name)  # the history read below is the one the move extends
            spelled = self._spelling(conn, name, alias)
            moves = Refs.history(conn, KIND, name, spelled)
            previous = Refs.target_before(moves, steps)
            if previous is None:
                history = f"see its history: keel prompts alias history {name} {alias}"
                if steps > len(moves):
                    message = (
                        f"alias {alias!r} of {name!r} has moved {len(moves)} time(s), so {steps} moves cannot be undone"
                    )
                elif steps == 1:
                    message = f"alias {alias!r} of {name!r} has no earlier target to roll back to"
                else:
                    message = f"alias {alias!r} of {name!r} was not set before its move {steps} back"
                raise Conflict(message, f"{history}, then use fewer --steps or 'alias set --at TIME'")
            default = f"rollback of {spelled}" if steps == 1 else f"rollback of {spelled} by {steps} moves"
            return Refs.set(conn, KIND, name, spelled, previous, audit_who(who), reason or default, expected=wanted)

    @operation("reader")
    def history(self, name: str, alias: str | None = None) -> list[RefMove]:
        """The reflog of a prompt's aliases (or one alias, in any spelling), oldest first;
        each move carries its reflog ``id``."""
        with self.db.read() as conn:
            spelled = None if alias is None else self._spelling(conn, name, alias, ever=True)
            return Refs.history(conn, KIND, name, spelled)
