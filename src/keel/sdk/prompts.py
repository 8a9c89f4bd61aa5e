"""``keel.prompts``: the prompt registry from Python.

::

    p = keel.prompts.register("chat", template="Answer: {{ question }}", model="gpt-4",
                              parameters={"temperature": 0.7}, changelog="First version")
    p = keel.prompts.load("chat@production")       # or "chat@1.3.0", "chat", load("chat", alias=...)
    text = p.render(question="How do refunds work?")
    keel.prompts.set_alias("chat", "production", "1.3.0", reason="+5% accuracy in run 4f2a")
    keel.prompts.rollback("chat", "production")

Loading inside an active run records ``prompt:NAME@VERSION`` as a run input,
so the runs that used a version are one lineage query away.

Caching: a pinned version (``chat@1.3.0``) is cached for the life of the
process (versions are immutable); an alias or ``latest`` for ``ttl`` seconds
(default 60, or ``KEEL_PROMPT_TTL``; 0 disables). If the store cannot be
reached, the last version served for that reference is served again, or else
``fallback`` (a template) is; ``Prompt.version`` always says what was served.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.entities import EntityRef
from keel.core.prompt_content import PromptContent, PromptDiff
from keel.core.templates import render_template
from keel.errors import StoreError
from keel.sdk.fluent import active_run
from keel.sdk.session import get_session
from keel.services.prompt_files import PromptFilesRejected
from keel.services.prompts import PromptVersion, RefMove, is_version, parse_prompt_ref

if TYPE_CHECKING:
    from keel.services.prompt_files import Problem, SyncResult

__all__ = [
    "Prompt",
    "PromptFilesRejected",
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
        """The prompt with ``variables`` filled in: a str, or a list of chat messages."""
        return render_template(self.content.template, variables)


_cache: dict[tuple[int, str, str | None], tuple[float | None, Prompt]] = {}
_cache_lock = threading.Lock()
# The hot path: (ref, version, alias) as the caller wrote them -> (expiry, prompt).
_served: dict[tuple[str, str | None, str | None], tuple[float | None, Prompt]] = {}


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


def _record_use(prompt: Prompt) -> None:
    run = active_run()  # this thread's / asyncio task's run
    if run is not None:
        run.use(prompt._entity, "prompt")


def load(
    ref: str,
    version: str | None = None,
    alias: str | None = None,
    fallback: Any = None,
    ttl: float | None = None,
) -> Prompt:
    """Load ``NAME``, ``NAME@VERSION`` or ``NAME@ALIAS`` (cached; see the module doc)."""
    hit = _served.get((ref, version, alias)) if ttl is None or ttl > 0 else None
    if hit is not None and (hit[0] is None or hit[0] > time.monotonic()):
        _record_use(hit[1])  # inside a run: record the version served (once per run)
        return hit[1]
    prompt, expiry = _load(ref, version, alias, fallback, ttl)
    if expiry is not False:
        with _cache_lock:
            _served[(ref, version, alias)] = (expiry, prompt)
    _record_use(prompt)
    return prompt


def _load(
    ref: str, version: str | None, alias: str | None, fallback: Any, ttl: float | None
) -> tuple[Prompt, float | None | bool]:
    """Load through the store-keyed cache; also says how long the caller may reuse the result
    (None: forever, False: not at all)."""
    name, selector = parse_prompt_ref(ref)
    selector = version or alias or selector
    try:
        session: Any = get_session()
    except StoreError:
        session = None  # unreachable: only a fallback can be served
    key = (id(session), name, selector)
    now = time.monotonic()
    hit = _cache.get(key)
    if hit is not None and (hit[0] is None or hit[0] > now):
        return hit[1], hit[0]
    else:
        try:
            if session is None:
                raise StoreError("the prompt store cannot be reached")
            found = session.prompts.get(name, selector)
        except StoreError:
            if hit is not None:
                return hit[1], False  # stale but real: better than a fallback
            if fallback is not None:
                content = fallback if isinstance(fallback, PromptContent) else PromptContent.create(template=fallback)
                return Prompt(None, name, content), False
            raise
        prompt = Prompt(found)
        pinned = is_version(selector)
        seconds = _ttl(ttl)
        if not pinned and seconds <= 0:
            return prompt, False
        expiry = None if pinned else now + seconds
        with _cache_lock:
            _cache[key] = (expiry, prompt)
        return prompt, expiry


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
    found, _created = get_session().prompts.register(
        name, template, model, parameters, few_shot, response_schema, changelog, bump, version, author
    )
    return Prompt(found)


def get(ref: str, at: int | float | datetime | None = None) -> PromptVersion:
    """The registered version (uncached), optionally what an alias pointed at, at time ``at``."""
    name, selector = parse_prompt_ref(ref)
    return get_session().prompts.get(name, selector, at)


def resolve(name: str, alias: str = "latest", at: int | float | datetime | None = None) -> str:
    """The version an alias points at now, or pointed at at time ``at``."""
    return get_session().prompts.resolve(name, alias, at)


def versions(name: str) -> list[PromptVersion]:
    """Every version of a prompt, newest first."""
    return get_session().prompts.versions(name)


def list_prompts() -> list[tuple[str, PromptVersion]]:
    """Every prompt with its latest version."""
    return get_session().prompts.list_prompts()


def diff(name: str, a: str, b: str) -> PromptDiff:
    """Template diff and model/parameter/variable changes between two versions."""
    return get_session().prompts.diff(name, a, b)


def set_alias(name: str, alias: str, version: str, reason: str = "", who: str | None = None) -> RefMove:
    """Point an alias at a version; the move is recorded with who and why."""
    move = get_session().prompts.set_alias(name, alias, version, reason, who)
    clear_cache()
    return move


def delete_alias(name: str, alias: str, reason: str = "", who: str | None = None) -> RefMove:
    """Remove an alias (recorded)."""
    move = get_session().prompts.delete_alias(name, alias, reason, who)
    clear_cache()
    return move


def rollback(name: str, alias: str, reason: str = "", who: str | None = None) -> RefMove:
    """Move an alias back to its previous target (recorded)."""
    move = get_session().prompts.rollback(name, alias, reason, who)
    clear_cache()
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
