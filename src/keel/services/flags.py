"""Feature flags: versioned flag sets per environment, from ``flags.yaml`` and the store.

- ``flags.yaml`` in the workspace folder (or any path given) holds flags under
  git; the store holds flags changed with ``keel flags set | rollout | kill``.
  The effective set of an environment is the file's flags overlaid by the
  store's (an operational change wins over the file until it is changed again).
- Every store change writes the environment's whole flag set as the next
  version (``flag_sets``) and moves the ref ``flag:<key>`` / ``<env>`` to
  that version, which appends the reflog entry (who, when, why, from which
  version to which).
- Every stored definition states its allocation scheme (``bucketing``, see
  :mod:`keel.core.bucketing`): a change keeps the scheme of the definition it
  changes (stored, or the file's; unstated there means ``crc32``), so no
  running flag moves its units; a flag new to the store gets ``blake2b``;
  naming a scheme in the change moves the flag to it (docs/flags.md).
- Setting a flag whose variant payload references a prompt version
  (``chat@2.0.0``) checks that the version exists.
- :meth:`FlagService.snapshot` is what clients poll: one indexed ``MAX``
  query tells whether anything changed.
- Concurrent changes of one environment queue on its lock (see
  :mod:`keel.meta.refs`), so flag-set versions are unique and gap-free and each
  flag's reflog is an exact chain; a change is merged onto the stored
  definition read under that lock, so no concurrent change is lost.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from keel.core.flags import (
    Flag,
    inherit_bucketing,
    parse_flag,
    parse_flags,
    parse_flags_yaml,
    parse_percent,
    prompt_references,
)
from keel.core.times import format_at, parse_at
from keel.errors import InvalidInput, NotFound
from keel.meta.events import record_event
from keel.meta.flags import FlagStore
from keel.meta.refs import RefMove, Refs
from keel.services.audit import who as audit_who
from keel.services.contract import (
    operation,
    service,
)
from keel.services.workspace import Store

__all__ = ["KIND", "FlagChange", "FlagHistoryEntry", "FlagService", "FlagSet"]

KIND = "flag"
FLAG_SET = "flag-set"  # the lock of one environment's flag set (refs lock the flag itself)
FILE_NAME = "flags.yaml"


@dataclass(frozen=True)
class FlagSet:
    """The effective flags of an environment and the version they come from.

    ``version`` is ``<env>@<store version>`` plus ``+<file hash>`` when a
    ``flags.yaml`` contributed (``production@3+1f2e3d4c``).
    """

    env: str
    version: str
    store_version: int
    flags: dict[str, Flag]
    sources: dict[str, str]  # flag key -> "store" | "file"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "env": self.env,
            "version": self.version,
            "store_version": self.store_version,
            "flags": {k: {"source": self.sources.get(k, ""), **self.flags[k].to_data()} for k in sorted(self.flags)},
        }


@dataclass(frozen=True)
class FlagChange:
    """The result of a change: the new flag-set version and the reflog entry."""

    flag: Flag
    version: int
    move: RefMove

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "flag": self.flag.key,
            "version": self.version,
            "definition": self.flag.to_data(),
            **self.move.to_dict(),
        }


@dataclass(frozen=True)
class FlagHistoryEntry:
    """One change of a flag: the reflog entry and the definition it moved to (None: deleted)."""

    move: RefMove
    definition: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.move.to_dict(), "definition": self.definition}


def _load_json(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    return doc if isinstance(doc, dict) else {}


@service("flags")
class FlagService:
    """Flag sets of one store (and the workspace's ``flags.yaml``)."""

    def __init__(self, store: Store, prompts: Any = None) -> None:
        self.store = store
        self.db = store.db
        self._prompts = prompts
        self._file_cache: tuple[str, int, int, dict[str, Flag], str] | None = None
        self._stored_cache: dict[str, tuple[int, dict[str, Flag]]] = {}

    # -- the file -----------------------------------------------------------------------
    def default_file(self) -> Path | None:
        """``flags.yaml`` in the workspace folder (or the current folder), if it exists."""
        for folder in (self.store.root, Path.cwd()):
            if folder is not None and (Path(folder) / FILE_NAME).is_file():
                return Path(folder) / FILE_NAME
        return None

    def file_flags(self, path: str | Path | None = None) -> tuple[dict[str, Flag], str]:
        """Flags from a YAML file and a short hash of its text (cached by mtime and size)."""
        file = Path(path) if path is not None else self.default_file()
        if file is None:
            return {}, ""
        try:
            stat = file.stat()
        except OSError:
            if path is not None:
                raise NotFound(f"no flags file {file}", "create it or leave out the path") from None
            return {}, ""
        cached = self._file_cache
        if (
            cached is not None
            and cached[0] == str(file)
            and cached[1] == stat.st_mtime_ns
            and cached[2] == stat.st_size
        ):
            return cached[3], cached[4]
        text = file.read_text(encoding="utf-8")
        flags = parse_flags_yaml(text, str(file.name if path is None else file))
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        self._file_cache = (str(file), stat.st_mtime_ns, stat.st_size, flags, digest)
        return flags, digest

    # -- reading ----------------------------------------------------------------------------
    @operation("reader")
    def store_version(self, env: str) -> int:
        """The newest stored version of an environment's flag set (0: none)."""
        with self.db.read() as conn:
            return FlagStore.latest_version(conn, env)

    @operation("reader")
    def stored(
        self, env: str, version: int | None = None, at: int | float | str | datetime | None = None
    ) -> tuple[int, dict[str, Flag]]:
        """The stored flag set (default: newest) as ``(version, flags)``; the newest is cached, so
        polling an unchanged set costs one indexed ``MAX`` query.

        ``at`` (anything :func:`keel.core.times.parse_at` reads): the set in force then, the
        highest version created at or before it (``(0, {})``: nothing was stored yet).
        """
        if at is not None:
            if version is not None:
                raise InvalidInput(
                    f"give a flag-set version of {env!r} or a time, not both",
                    "a version is one fixed set; at= answers with the set in force at that time",
                )
            ms = parse_at(at)
            with self.db.read() as conn:
                row = FlagStore.as_of(conn, env, ms)
            if row is None:
                return 0, {}
            return row.version, parse_flags(_load_json(row.flags), f"flag set {env}@{row.version}")
        with self.db.read() as conn:
            if version is None:
                latest = FlagStore.latest_version(conn, env)
                cached = self._stored_cache.get(env)
                if cached is not None and cached[0] == latest:
                    return cached
            row = FlagStore.get(conn, env, version)
        if row is None:
            if version is not None:
                raise NotFound(f"no flag-set version {version} in {env!r}", "see 'keel flags history FLAG'")
            return 0, {}
        found = row.version, parse_flags(_load_json(row.flags), f"flag set {env}@{row.version}")
        if version is None:
            self._stored_cache[env] = found
        return found

    def snapshot(
        self,
        env: str = "production",
        path: str | Path | None = None,
        use_file: bool = True,
        at: int | float | str | datetime | None = None,
    ) -> FlagSet:
        """The effective flag set of ``env``: the file's flags overlaid by the store's.

        ``at``: the store's set as it was then (:meth:`stored`), over the file as it is now
        (``flags.yaml`` is versioned by git: check out that commit for its past)."""
        _check_env(env)
        version, stored = self.stored(env, at=None if at is None else parse_at(at))
        file_flags, digest = self.file_flags(path) if use_file else ({}, "")
        flags = dict(file_flags)
        sources = dict.fromkeys(file_flags, "file")
        flags.update(stored)
        sources.update(dict.fromkeys(stored, "store"))
        label = f"{env}@{version}" + (f"+{digest}" if digest else "")
        return FlagSet(env, label, version, flags, sources)

    def get(
        self,
        key: str,
        env: str = "production",
        path: str | Path | None = None,
        at: int | float | str | datetime | None = None,
    ) -> Flag:
        """One flag's effective definition (NotFound if neither the store nor the file has it);
        ``at``: as in force at that time (see :meth:`snapshot`)."""
        ms = None if at is None else parse_at(at)
        found = self.snapshot(env, path, at=ms).flags.get(key)
        if found is None:
            when = "" if ms is None else f" at {format_at(ms)}"
            raise NotFound(
                f"no flag {key!r} in {env!r}{when}", f"list flags with 'keel flags list{when.replace(' at', ' --at')}'"
            )
        return found

    # -- changing ---------------------------------------------------------------------------
    @operation("writer", local_only=("path",))
    def set(
        self,
        key: str,
        spec: Mapping[str, Any] | None = None,
        env: str = "production",
        reason: str = "",
        who: str | None = None,
        merge: bool = True,
        path: str | Path | None = None,
        **fields: Any,
    ) -> FlagChange:
        """Create or change a flag; ``fields`` (rollout=25, enabled=False, ...) are merged onto the
        current definition (``merge``) or onto ``spec``. Returns the new version and reflog entry."""
        _check_env(env)
        if spec is not None and not isinstance(spec, Mapping):
            raise InvalidInput(f"flag {key!r}: the definition must be a mapping", "e.g. {rollout: 25}")
        file_flag = self.file_flags(path)[0].get(key)
        in_file = file_flag if merge else None

        def build(stored: Flag | None) -> Flag:
            """The new definition, from the one stored now (read under the lock) or the file's."""
            base: dict[str, Any] = {}
            current = stored if stored is not None else in_file
            if merge and current is not None:
                base = current.to_data()
            if spec is not None:
                base = dict(spec) if not merge else {**base, **spec}
            base.update(fields)
            if "variants" in fields and "default" not in fields and "default" in base:
                if str(base["default"]) not in {str(k) for k in (base["variants"] or {})}:
                    base.pop("default")
            # the scheme of the definition this one replaces (stored, else the file's): units stay put
            flag = parse_flag(key, inherit_bucketing(base, stored if stored is not None else file_flag))
            self._check_prompts(flag)
            return flag

        return self._write(env, key, build, reason, who)

    @operation("writer")
    def rollout(
        self, key: str, percent: Any, env: str = "production", reason: str = "", who: str | None = None
    ) -> FlagChange:
        """Serve a boolean flag to ``percent`` of units (sticky: growing it only adds units)."""
        pct = parse_percent(percent)
        flag = self.get(key, env)
        if not flag.is_boolean:
            raise InvalidInput(
                f"flag {key!r} is multivariate: a rollout is for boolean flags",
                f"set a distribution: keel flags set {key} --set distribution.VARIANT=PERCENT",
            )
        return self.set(key, env=env, reason=reason, who=who, rollout=pct, enabled=True)

    @operation("writer")
    def kill(self, key: str, env: str = "production", reason: str = "", who: str | None = None) -> FlagChange:
        """The kill switch: everyone gets the flag's default until it is enabled again."""
        self.get(key, env)
        return self.set(key, env=env, reason=reason, who=who, enabled=False)

    @operation("writer")
    def delete(self, key: str, env: str = "production", reason: str = "", who: str | None = None) -> RefMove:
        """Remove a flag from the stored set (a file flag of the same key then applies again)."""
        _check_env(env)
        with self.db.write() as conn:
            Refs.lock(conn, FLAG_SET, env)  # the version read below is the newest until commit
            version = FlagStore.latest_version(conn, env)
            row = FlagStore.get(conn, env, version) if version else None
            flags = _load_json(row.flags).get("flags", {}) if row else {}
            if key not in flags:
                raise NotFound(f"no stored flag {key!r} in {env!r}", "list flags with 'keel flags list'")
            del flags[key]
            author = audit_who(who)
            move = Refs.delete(conn, KIND, key, env, author, reason)
            # the set is stamped with its move's time (see _write)
            FlagStore.insert(conn, env, version + 1, json.dumps({"flags": flags}), author, reason, at=move.at)
            return move

    def _write(
        self, env: str, key: str, build: Callable[[Flag | None], Flag], reason: str, who: str | None
    ) -> FlagChange:
        """Store ``build(the flag's stored definition)`` as the next version of ``env``'s flag set."""
        author = audit_who(who)
        with self.db.write() as conn:
            Refs.lock(conn, FLAG_SET, env)  # what is read below is the newest until commit
            version = FlagStore.latest_version(conn, env)
            row = FlagStore.get(conn, env, version) if version else None
            flags = _load_json(row.flags).get("flags", {}) if row else {}
            stored = parse_flag(key, flags[key]) if key in flags else None
            flag = build(stored)
            flags[key] = flag.to_data()
            new = version + 1
            move = Refs.set(conn, KIND, key, env, str(new), author, reason)
            # stamped with the move's time, not a moment earlier in the transaction: "as of" the
            # time history prints for this change answers with this set, a millisecond before with the last
            FlagStore.insert(conn, env, new, json.dumps({"flags": flags}, sort_keys=True), author, reason, at=move.at)
            if not flag.enabled and (stored is None or stored.enabled):
                subject = {"kind": "flag", "name": key, "env": env}
                record_event(conn, "flag.killed", project=None, subject=subject, data={"who": author, "reason": reason})
        return FlagChange(flag, new, move)

    def _check_prompts(self, flag: Flag) -> None:
        refs = prompt_references(flag)
        if not refs:
            return
        if self._prompts is None:
            from keel.services.prompts import PromptService

            self._prompts = PromptService(self.store)
        for name, version in refs:
            try:
                self._prompts.get(name, version)
            except NotFound:
                raise InvalidInput(
                    f"flag {flag.key!r} references prompt {name}@{version}, which does not exist",
                    f"register it first (keel prompts register) or fix the payload; see 'keel prompts show {name}'",
                ) from None

    # -- history ----------------------------------------------------------------------------
    @operation("reader")
    def history(self, key: str, env: str = "production") -> list[FlagHistoryEntry]:
        """Every stored change of a flag, oldest first, with the definition it moved to."""
        _check_env(env)
        out = []
        with self.db.read() as conn:
            moves = Refs.history(conn, KIND, key, env)
            for move in moves:
                definition = None
                if move.new is not None:
                    row = FlagStore.get(conn, env, int(move.new))
                    if row is not None:
                        definition = _load_json(row.flags).get("flags", {}).get(key)
                out.append(FlagHistoryEntry(move, definition))
        return out

    @operation("reader")
    def environments(self) -> list[str]:
        """Environments with stored flags."""
        with self.db.read() as conn:
            return FlagStore.envs(conn)


def _check_env(env: Any) -> str:
    if not isinstance(env, str) or not env or not env.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput(f"invalid environment {env!r}", "environments are names like production, staging")
    return env
