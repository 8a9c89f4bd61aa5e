"""``keel.prompts``: the prompt registry from Python.

::

    p = keel.prompts.register("chat", template="Answer: {{ question }}", model="gpt-4",
                              parameters={"temperature": 0.7}, changelog="First version")
    p = keel.prompts.load("chat@production")       # or "chat@1.3.0", "chat", load("chat", alias=...)
    text = p.render(question="How do refunds work?")
    keel.prompts.set_alias("chat", "production", "1.3.0", reason="+5% accuracy in run 4f2a")
    keel.prompts.rollback("chat", "production")            # undo its last move (steps=2: the last two)
    keel.prompts.get("chat@production", at="2026-12-07T10:00:00Z")   # where it pointed then
    keel.prompts.get("chat", at="2026-12-07T10:00:00Z")    # the latest version then

Times (``at=``) are read by :func:`keel.core.times.parse_at`: a datetime (naive = this
process's local time), ISO 8601 text with ``Z`` or an offset, epoch milliseconds, or text
with a unit (``"1733500000s"``); a zoneless text or a number that looks like seconds is
refused. The time is read here, in the caller's process, so a remote store sees the instant.

Loading inside an active run records ``prompt:NAME@VERSION`` as a run input,
so the runs that used a version are one lineage query away.

Caching: ``load`` and ``get`` serve every reference from an in-process cache (a
dict lookup, millions per second) and never touch the store on the request path
after the first load of a reference. The cache is kept current in the background
(:mod:`keel.sdk.live`): a moved alias, a rollback or a newly registered ``latest``
reaches every running process within 2 s (typically under 1 s), through the store's
change counters, locally or against a keel server. ``ttl`` (default 60, or
``KEEL_PROMPT_TTL``) is only a backstop: an alias is re-read in the background at
least every ``ttl`` seconds even when no change is signalled. ``ttl=0`` means no
cache: the store is read on every call, which waits on the store (and can block
when it is locked or slow); use it for tools, not on a request path.

The very first load of a reference in a process may wait, at most
``KEEL_FIRST_LOAD_TIMEOUT`` seconds (2); past that, or when the store cannot be
reached, ``fallback`` (a template) is served if given, else the error is raised.
A store that stops answering later changes nothing for the caller: the last
version read keeps being served, and the background refresh retries.
``Prompt.version`` always says what was served. Changes made by this process
(``set_alias``, ``rollback``, ``register``) are read back by its next load.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.entities import EntityRef
from keel.core.prompt_content import PromptContent, PromptDiff
from keel.core.times import AtLike, parse_at
from keel.errors import InvalidInput, NotFound, PromptFilesRejected, StoreError
from keel.sdk import live
from keel.sdk.fluent import active_run
from keel.sdk.session import get_session
from keel.services.prompts import PromptVersion, RefMove, is_version, parse_prompt_ref

if TYPE_CHECKING:
    from keel.services.prompt_files import Problem, SyncResult

__all__ = [
    "Prompt",
    "PromptFilesRejected",
    "aliases_at",
    "check",
    "clear_cache",
    "delete_alias",
    "diff",
    "export",
    "get",
    "history",
    "list_prompts",
    "load",
    "register",
    "resolve",
    "rollback",
    "set_alias",
    "sync",
    "versions",
]


def _note(kind: str, name: str, version: Any) -> None:
    """:func:`keel.sdk.traces.note`, without importing the tracing API for code that never
    traces (``keel prompts show``): no span can be open before that module is loaded."""
    traces = sys.modules.get("keel.sdk.traces")
    if traces is not None:
        traces.note(kind, name, version)


FALLBACK_VERSION = "fallback"


class Prompt:
    """A loaded prompt version: its content, and ``render(**variables)``."""

    __slots__ = ("_entity", "content", "content_hash", "name", "version", "_version")

    def __init__(self, version: PromptVersion | None, name: str = "", content: PromptContent | None = None) -> None:
        self._version = version
        self.name = version.name if version else name
        self.version = version.version if version else FALLBACK_VERSION
        self.content: PromptContent = version.content if version else content  # type: ignore[assignment]
        self.content_hash = version.content_hash if version else self.content.content_hash()
        self._entity = EntityRef("prompt", self.name, self.version)

    def __repr__(self) -> str:
        return f"<Prompt {self.name}@{self.version}>"

    @property
    def ref(self) -> str:
        """``name@version`` of what was served."""
        return f"{self.name}@{self.version}"

    @property
    def template(self) -> Any:
        """The template (text, or a list of chat messages)."""
        return self.content.template

    @property
    def model(self) -> str:
        """The model the prompt was written for."""
        return self.content.model

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Model parameters (temperature, max_tokens, ...)."""
        return self.content.parameters

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables ``render`` needs."""
        return self.content.variables

    @property
    def info(self) -> PromptVersion | None:
        """The registered version (changelog, author, time, aliases); None for a fallback."""
        return self._version

    def render(self, /, **variables: Any) -> Any:
        """The prompt with ``variables`` filled in: a str, or a list of chat messages.

        Inside a trace, the current span records the version rendered (``keel.prompt``)."""
        from keel.core.templates import render_template  # Jinja2: loaded by the first render

        _note("prompt", self.name, self.version)
        return render_template(self.content.template, variables)


class _Entry:
    """One cached reference: what is served for ``name@selector`` of one session's store."""

    __slots__ = ("loaded", "name", "pinned", "prompt", "selector", "ttl")

    def __init__(self, name: str, selector: str | None, prompt: Prompt, ttl: float) -> None:
        self.name = name
        self.selector = selector
        self.prompt = prompt  # swapped whole by the refresher: a reader sees the old or the new one
        self.ttl = ttl
        self.loaded = time.monotonic()
        self.pinned = is_version(selector)


# (session id, name, selector) -> entry; the refresher keeps these current.
_cache: dict[tuple[int, str, str | None], _Entry] = {}
_cache_lock = threading.Lock()
# The hot path: (ref, version, alias) as the caller wrote them -> the entry (one dict lookup).
_served: dict[tuple[str, str | None, str | None], _Entry] = {}
# session id -> the listener that refreshes that session's entries
_refreshers: dict[int, _Refresher] = {}


def _ttl(ttl: float | None) -> float:
    if ttl is not None:
        return float(ttl)
    return float(os.environ.get("KEEL_PROMPT_TTL", "60"))


def clear_cache() -> None:
    """Forget every cached prompt (the next load asks the store).

    The cache is per process; a process that switches stores (another folder
    or ``KEEL_URI``) should call this.
    """
    with _cache_lock:
        _cache.clear()
        _served.clear()
        refreshers = list(_refreshers.values())
        _refreshers.clear()
    for refresher in refreshers:
        refresher.watcher.unsubscribe(refresher)


def _forget(name: str) -> None:
    """Drop the cached references of ``name`` (after this process changed its aliases: the
    next load reads what it wrote), and wake the refresher for the other processes' caches."""
    with _cache_lock:
        gone = {id(entry) for key, entry in _cache.items() if key[1] == name}
        for key in [key for key in _cache if key[1] == name]:
            del _cache[key]
        for served in [served for served, entry in _served.items() if id(entry) in gone]:
            del _served[served]
        refreshers = list(_refreshers.values())
    for refresher in refreshers:
        refresher.watcher.poke()


class _Refresher(live.Listener):
    """Keeps one session's cached references current: all of them when a prompt changed
    anywhere (an alias moved, a version registered), each alias at least every ``ttl``."""

    kinds = frozenset({"prompt"})

    def __init__(self, session: Any) -> None:
        self._session = weakref.ref(session)
        self.sid = id(session)
        self.watcher = live.watcher(session)

    def __repr__(self) -> str:
        return "the prompt cache"

    def alive(self) -> bool:
        return self._session() is not None

    def due(self) -> bool:
        now = time.monotonic()
        return any(
            key[0] == self.sid and not entry.pinned and now - entry.loaded > entry.ttl
            for key, entry in list(_cache.items())
        )

    def refresh(self, changed: bool) -> None:
        session = self._session()
        if session is None:
            return
        now = time.monotonic()
        for key, entry in list(_cache.items()):
            if key[0] != self.sid:
                continue
            if not (changed or (not entry.pinned and now - entry.loaded > entry.ttl)):
                continue
            try:
                found = session.prompts.get(entry.name, entry.selector)
            except NotFound:  # the alias (or prompt) is gone: the next load says so
                _drop(key, entry)
                continue
            # Anything else (the store does not answer, a revoked token): raised, so the entry
            # keeps being served and the refresher retries.
            entry.loaded = now
            if found != entry.prompt.info:
                entry.prompt = Prompt(found)


def _drop(key: tuple[int, str, str | None], entry: _Entry) -> None:
    with _cache_lock:
        if _cache.get(key) is entry:
            del _cache[key]
        for served in [k for k, e in _served.items() if e is entry]:
            del _served[served]


def _record_use(prompt: Prompt, selector: str | None) -> None:
    """Inside a trace: the current span used ``prompt``. Inside a run: record the version
    served, once per run, with the alias that led to it (``latest`` for a bare name; none
    when the caller named the version)."""
    _note("prompt", prompt.name, prompt.version)
    run = active_run()  # this thread's / asyncio task's run
    if run is not None:
        run.use(prompt._entity, "prompt", "" if is_version(selector) else (selector or "latest"))


def load(
    ref: str,
    version: str | None = None,
    alias: str | None = None,
    fallback: Any = None,
    ttl: float | None = None,
) -> Prompt:
    """Load ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS`` (cached and kept current; see the
    module doc). ``ttl=0`` reads the store on every call (and may wait on it)."""
    if ttl is None or ttl > 0:
        entry = _served.get((ref, version, alias))
        if entry is not None:
            prompt = entry.prompt
            _record_use(prompt, entry.selector)  # inside a run: the version served (once per run)
            return prompt
    prompt = _load(ref, version, alias, fallback, ttl)
    _record_use(prompt, version or alias or parse_prompt_ref(ref)[1])
    return prompt


def _fallback(name: str, fallback: Any) -> Prompt:
    content = fallback if isinstance(fallback, PromptContent) else PromptContent.create(template=fallback)
    return Prompt(None, name, content)


def _load(ref: str, version: str | None, alias: str | None, fallback: Any, ttl: float | None) -> Prompt:
    """The slow path: a first load (bounded wait), or a read through the cache (``ttl=0``)."""
    name, selector = parse_prompt_ref(ref)
    selector = version or alias or selector
    seconds = _ttl(ttl)
    try:
        session: Any = get_session()
    except StoreError as exc:  # unreachable: only a fallback can be served
        if fallback is not None:
            return _fallback(name, fallback)
        raise StoreError("the prompt store cannot be reached", exc.hint) from exc
    key = (id(session), name, selector)
    if seconds <= 0:
        return _read_through(session, key, fallback)
    entry = _cache.get(key)
    if entry is None:
        try:
            entry = live.first_load(
                ("prompt", *key),
                lambda: _first_load(session, key, seconds),
                f"loading prompt {name}@{selector or 'latest'}",
            )
        except StoreError:
            if fallback is not None:
                return _fallback(name, fallback)
            raise
    with _cache_lock:
        entry.ttl = min(entry.ttl, seconds)
        _served[(ref, version, alias)] = entry
    return entry.prompt


def _first_load(session: Any, key: tuple[int, str, str | None], seconds: float) -> _Entry:
    """Read one reference and cache it (in a helper thread: see :func:`keel.sdk.live.first_load`)."""
    _sid, name, selector = key
    found = session.prompts.get(name, selector)
    entry = _Entry(name, selector, Prompt(found), seconds)
    with _cache_lock:
        _cache[key] = entry
        refresher = _refreshers.get(id(session))
        if refresher is None:
            refresher = _refreshers[id(session)] = _Refresher(session)
            new = True
        else:
            new = False
    if new:
        refresher.watcher.subscribe(refresher)
    return entry


def _read_through(session: Any, key: tuple[int, str, str | None], fallback: Any) -> Prompt:
    """``ttl=0``: read the store now; a cached entry of the same reference is updated too."""
    _sid, name, selector = key
    try:
        found = session.prompts.get(name, selector)
    except StoreError:
        entry = _cache.get(key)
        if entry is not None:
            return entry.prompt  # stale but real: better than a fallback
        if fallback is not None:
            return _fallback(name, fallback)
        raise
    prompt = Prompt(found)
    entry = _cache.get(key)
    if entry is not None:
        entry.loaded = time.monotonic()
        if found != entry.prompt.info:
            entry.prompt = prompt
    return prompt


def register(
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
) -> Prompt:
    """Register a new version (or return the existing one with identical content).

    ``bump`` is major/minor/patch (default: the smallest the change allows) or
    give an explicit ``version``; see ``keel.core.prompt_content.BUMP_RULE``.
    """
    found, created = get_session().prompts.register(
        name, template, model, parameters, few_shot, response_schema, changelog, bump, version, author
    )
    if created:
        _forget(name)  # "latest" moved
    return Prompt(found)


def get(
    ref: str,
    version: str | int | float | datetime | None = None,
    ttl: float | None = None,
    *,
    alias: str | None = None,
    at: AtLike | None = None,
) -> PromptVersion:
    """The registered version ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS`` (changelog, author,
    aliases), from the cache like :func:`load`; ``ttl=0`` reads the store now.

    ``version`` and ``alias`` select as in :func:`load`: ``get("calc", "1.2.0")`` is
    ``get("calc@1.2.0")``, ``get("calc", alias="production")`` is ``get("calc@production")``.
    With ``at`` (see the module doc for the forms a time takes): what an alias pointed at, or
    (no alias) the latest version, at that time, with the aliases as of then (read from the
    store). A time given in second place means ``at``, as it did when ``at`` was the second
    parameter.
    """
    if version is not None and not isinstance(version, str):
        if at is not None:
            raise InvalidInput(
                f"two times given for {ref!r}: {version!r} and at={at!r}", f'keel.prompts.get("{ref}", at=...)'
            )
        version, at = None, version  # the former positional ``at``
    name, selector = parse_prompt_ref(ref)
    for given, what in ((version, "version"), (alias, "alias")):
        if given is not None and selector is not None and given != selector:
            raise InvalidInput(
                f"{ref!r} already names {selector!r}, and {what}={given!r} names another",
                f'give it once: keel.prompts.get("{name}", {what}="{given}")',
            )
    if at is None:
        if ttl is None or ttl > 0:
            entry = _served.get((ref, version, alias))
            if entry is not None:
                info = entry.prompt.info
                _note("prompt", entry.prompt.name, entry.prompt.version)
                return info  # type: ignore[return-value]  # entries hold registered versions
        found = _load(ref, version, alias, None, ttl).info
        assert found is not None  # no fallback was given
        _note("prompt", found.name, found.version)
        return found
    return get_session().prompts.get(name, version or alias or selector, parse_at(at))


def resolve(name: str, alias: str = "latest", at: AtLike | None = None) -> str:
    """The version an alias (or ``latest``) points at now, or pointed at at time ``at``."""
    return get_session().prompts.resolve(name, alias, None if at is None else parse_at(at))


def aliases_at(name: str, at: AtLike) -> dict[str, str]:
    """Every alias of a prompt as it was at time ``at``: ``{alias: version}``."""
    return get_session().prompts.aliases_at(name, parse_at(at))


def versions(name: str, at: AtLike | None = None) -> list[PromptVersion]:
    """Every version of a prompt, newest first; with ``at``, those registered by then, with
    their aliases as of then."""
    return get_session().prompts.versions(name, None if at is None else parse_at(at))


def list_prompts() -> list[tuple[str, PromptVersion]]:
    """Every prompt with its latest version."""
    return get_session().prompts.list_prompts()


def diff(name: str, a: str, b: str) -> PromptDiff:
    """Template diff and model/parameter/variable changes between two versions."""
    return get_session().prompts.diff(name, a, b)


def set_alias(
    name: str,
    alias: str,
    version: str | None = None,
    reason: str = "",
    who: str | None = None,
    *,
    at: AtLike | None = None,
) -> RefMove:
    """Point an alias at a version, or (``at=``) where it pointed at that time; the move is
    recorded with who and why. Another spelling of an existing alias moves that alias."""
    when = None if at is None else parse_at(at)
    move = get_session().prompts.set_alias(name, alias, version, reason, who, at=when)
    _forget(name)
    return move


def delete_alias(name: str, alias: str, reason: str = "", who: str | None = None) -> RefMove:
    """Remove an alias (recorded)."""
    move = get_session().prompts.delete_alias(name, alias, reason, who)
    _forget(name)
    return move


def rollback(name: str, alias: str, reason: str = "", who: str | None = None, *, steps: int = 1) -> RefMove:
    """Undo the alias's last ``steps`` moves (recorded as a move of its own): it points where it
    pointed before them. A rollback is a move too, so two single rollbacks return to the start;
    ``steps=2`` goes two moves back. Conflict if the alias has moved fewer times."""
    move = get_session().prompts.rollback(name, alias, reason, who, steps=steps)
    _forget(name)
    return move


def history(name: str, alias: str | None = None) -> list[RefMove]:
    """Every alias move of a prompt (or of one alias), oldest first."""
    return get_session().prompts.history(name, alias)


def check(directory: str | os.PathLike[str] = "prompts") -> list[Problem]:
    """Compare a ``prompts/`` folder with the registry; every problem found (none: all good)."""
    from keel.services.prompt_files import check_prompt_dir

    return check_prompt_dir(get_session().prompts, directory)


def sync(directory: str | os.PathLike[str] = "prompts", author: str | None = None) -> list[SyncResult]:
    """Register every new version in a ``prompts/`` folder: all or nothing, idempotent."""
    from keel.services.prompt_files import sync_prompt_dir

    results = sync_prompt_dir(get_session().prompts, directory, author)
    clear_cache()
    return results


def export(name: str, directory: str | os.PathLike[str] = "prompts", version: str | None = None) -> list[Path]:
    """Write a registered text prompt back to a ``prompts/`` folder; returns the files written."""
    from keel.services.prompt_files import export_prompt

    return export_prompt(get_session().prompts, name, directory, version)
