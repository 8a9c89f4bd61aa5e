"""``keel.flags``: feature flags, evaluated locally and fast.

::

    flags = keel.flags.client(env="production")
    if flags.is_enabled("use_new_prompt_v2", user_id=uid):
        prompt = keel.prompts.load("chat@2.0.0")
    variant = flags.variant("reranker", user_id=uid)
    payload = flags.payload("reranker", user_id=uid)

    keel.flags.set("use_new_prompt_v2", rollout=10, reason="canary")
    keel.flags.rollout("use_new_prompt_v2", "25%", reason="no regressions")
    keel.flags.kill("use_new_prompt_v2", reason="incident 42")
    keel.flags.history("use_new_prompt_v2")
    keel.flags.get("use_new_prompt_v2", at="2026-12-07T10:00:00Z")   # as it was then

The client holds the environment's flag set compiled in memory (``flags.yaml``
overlaid by the store's flags); evaluating is a dict lookup and a CRC, never a
query, so a locked or unreachable store never slows an evaluation down.

**Live changes.** A flag change (``set``, ``rollout``, ``kill``, ``delete``, from
any process, the CLI or the web UI) reaches every running client within 2 s
(typically under 1 s), locally and against a keel server: the session's refresher
(:mod:`keel.sdk.live`) follows the store's change counters and re-reads the set
only when a flag changed; it also notices an edited ``flags.yaml`` (a ``stat``
every half second). ``refresh_seconds`` (default 30) is a backstop: the set is
re-read at least that often even without a signal. ``refresh_seconds=0`` makes a
static client: it changes only when you call :meth:`FlagClient.refresh`.
Creating a client waits for the flag set at most ``KEEL_FIRST_LOAD_TIMEOUT``
seconds (2); past that it serves every flag's ``default`` until the set arrives.
While the store does not answer, the client keeps the set it has (one warning
per outage) and the refresher retries.

**Never raises.** An unknown flag, a broken context or any other error returns
the ``default`` you pass and logs why (``logging`` logger ``keel``, at most once
a minute per flag and kind of problem).

**Units.** A flag fully on or off (a 0% or 100% rollout, one variant at 100%)
needs no unit: ``flags.is_enabled("enable_reranker")`` is its value. A partial
rollout or distribution buckets by the flag's unit (``user_id`` unless the flag
says otherwise): called without it, it serves the flag's ``default`` and warns
once per flag per process, naming the argument to pass.

**Exposures.** With ``log_exposures=True``, evaluating a flag inside an active
run records ``flag:<key>@<flag-set version>`` as the run's input (once per run)
and the param ``flags.<key>`` (the version). For conversations,
``client.evaluate_all(user_id=uid)`` returns ``{flag: variant}`` to put in the
conversation's metadata.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keel.core.entities import EntityRef
from keel.core.flags import CompiledFlag, Flag, compile_flag
from keel.core.times import AtLike, parse_at
from keel.errors import StoreError
from keel.sdk import live
from keel.sdk.fluent import active_run
from keel.sdk.session import get_session
from keel.sdk.traces import current_span, note
from keel.services.flags import FlagChange, FlagHistoryEntry, FlagService, FlagSet

__all__ = [
    "FlagChange",
    "FlagClient",
    "FlagHistoryEntry",
    "FlagSet",
    "client",
    "delete",
    "get",
    "history",
    "kill",
    "list_flags",
    "openfeature_provider",
    "rollout",
    "set",
    "snapshot",
]

log = logging.getLogger("keel")

_WARN_EVERY = 60.0
_warned: dict[tuple[str, str], float] = {}


def _warn(key: str, kind: str, message: str, *args: Any) -> None:
    """Log a problem at most once a minute per (flag, kind)."""
    now = time.monotonic()
    last = _warned.get((key, kind))
    if last is not None and now - last < _WARN_EVERY:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned[(key, kind)] = now
    log.warning("keel flags: " + message, *args)


_unit_warned: builtins.set[str] = builtins.set()  # flags already warned about a missing unit


def _missing_unit(flag: Flag) -> None:
    """A partial split met a context without the flag's unit: say so, once per flag per process."""
    if flag.key in _unit_warned:
        return
    if len(_unit_warned) > 10_000:
        _unit_warned.clear()
    _unit_warned.add(flag.key)
    served = (flag.default == "true") if flag.is_boolean else flag.default
    call = "is_enabled" if flag.is_boolean else "variant"
    log.warning(
        "keel flags: flag %r serves by %s (a partial rollout) and this call gave no %s, so it serves its "
        "default %r; pass the unit: flags.%s(%r, %s=...) (this warning is shown once per flag)",
        flag.key, flag.unit, flag.unit, served, call, flag.key, flag.unit,
    )  # fmt: skip


def _service() -> FlagService:
    service: FlagService = get_session().flags
    return service


class FlagClient:
    """Evaluates an environment's flags from an in-memory compiled copy (see the module doc)."""

    def __init__(
        self,
        env: str = "production",
        refresh_seconds: float = 30,
        path: str | Path | None = None,
        log_exposures: bool = False,
        service: FlagService | None = None,
        watcher: live.Watcher | None = None,
    ) -> None:
        self.env = env
        self.refresh_seconds = refresh_seconds
        self.path = path
        self.log_exposures = log_exposures
        self._service = service
        self._compiled: dict[str, CompiledFlag] = {}
        self._enabled: dict[str, Any] = {}
        self._picks: dict[str, Any] = {}
        self.version = ""
        self.loaded_at = 0.0
        self._loaded_mono = time.monotonic()
        self._file_seen: tuple[str, int, int] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._exposed: builtins.set[tuple[str, str, str]] = builtins.set()  # (run, flag, version) already recorded
        try:  # the first load may wait, briefly (then defaults are served until it arrives)
            live.first_load(("flags", id(self)), self._reload, f"loading the {env} flags")
        except Exception as exc:
            _warn("*", "refresh", "could not load the %s flags (serving defaults until they load): %s", env, exc)
        self._refresher: _Refresher | None = None
        if refresh_seconds and refresh_seconds > 0:
            self._refresher = _Refresher(self, watcher or live.watcher())
            self._refresher.watcher.subscribe(self._refresher)

    def __repr__(self) -> str:
        return f"FlagClient(env={self.env!r}, version={self.version!r}, flags={len(self._compiled)})"

    # -- loading ----------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read the flag set now (waits on the store); True if it changed. Errors keep the
        current set (logged)."""
        try:
            return self._reload()
        except Exception as exc:
            _warn("*", "refresh", "could not load the %s flags (keeping version %r): %s", self.env, self.version, exc)
            return False

    def _reload(self) -> bool:
        """Re-read the flag set; True if it changed (errors raise)."""
        service = self._service or _service()
        seen = self._file_signature()  # before the read: an edit during it is seen next time
        flagset = service.snapshot(self.env, self.path)
        self._file_seen = seen
        self.loaded_at = time.time()
        self._loaded_mono = time.monotonic()
        if flagset.version == self.version:
            return False
        self._install(flagset)
        return True

    def _file_signature(self) -> tuple[str, int, int] | None:
        """Which ``flags.yaml`` applies and its mtime and size (None: none), without reading it."""
        try:
            service = self._service or _service()
            file = Path(self.path) if self.path is not None else service.default_file()
            if file is None:
                return None
            stat = file.stat()
            return str(file), stat.st_mtime_ns, stat.st_size
        except Exception:  # noqa: BLE001 - a missing file is "no file"; the next read reports errors
            return None

    def _install(self, flagset: FlagSet) -> None:
        compiled = {key: compile_flag(flag, flagset.version, _missing_unit) for key, flag in flagset.flags.items()}
        with self._lock:
            # Three whole-dict swaps: a concurrent evaluation sees the old or the new set.
            self._compiled = compiled
            self._enabled = {k: c.enabled for k, c in compiled.items()}
            self._picks = {k: c.pick for k, c in compiled.items()}
            self.version = flagset.version

    def close(self) -> None:
        """Stop the background refresh."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.watcher.unsubscribe(self._refresher)

    @property
    def flags(self) -> dict[str, Flag]:
        """The definitions in force."""
        return {k: c.flag for k, c in self._compiled.items()}

    # -- evaluating ---------------------------------------------------------------------------
    def is_enabled(self, key: str, default: bool = False, **context: Any) -> bool:
        """True if the flag is on for this context (multivariate: not serving its default)."""
        try:
            result: bool = self._enabled[key](context)
        except KeyError:
            if key not in self._enabled:
                _warn(key, "missing", "no flag %r in %s (version %s); serving the default %r",
                      key, self.env, self.version, default)  # fmt: skip
                return default
            return self._failed(key, default, context)
        except Exception:
            return self._failed(key, default, context)
        if current_span() is not None:  # inside a trace: the current span records the variant
            self._note(key, result, context)
        if self.log_exposures:
            run = active_run()  # this thread's / asyncio task's run
            if run is not None:
                self._expose(key, run)
        return result

    def _note(self, key: str, enabled: bool, context: Mapping[str, Any]) -> None:
        compiled = self._compiled.get(key)
        if compiled is not None and not compiled.flag.is_boolean:
            try:
                note("flag", key, self._picks[key](context))  # the variant, not just "not the default"
                return
            except Exception:  # noqa: BLE001, S110 - noted as on/off instead
                pass
        note("flag", key, "true" if enabled else "false")

    def variant(self, key: str, default: str | None = None, **context: Any) -> str | None:
        """The variant name served to this context (``"true"``/``"false"`` for booleans)."""
        try:
            name: str = self._picks[key](context)
        except KeyError:
            if key not in self._picks:
                _warn(key, "missing", "no flag %r in %s (version %s); serving the default %r",
                      key, self.env, self.version, default)  # fmt: skip
                return default
            return self._failed(key, default, context)
        except Exception:
            return self._failed(key, default, context)
        note("flag", key, name)  # inside a trace: the current span records the variant
        if self.log_exposures:
            run = active_run()  # this thread's / asyncio task's run
            if run is not None:
                self._expose(key, run)
        return name

    def payload(self, key: str, default: Any = None, **context: Any) -> Any:
        """The served variant's payload (e.g. ``"prompt:chat@2.0.0"``); booleans: True/False."""
        compiled = self._compiled.get(key)
        name = self.variant(key, None, **context)
        if compiled is None or name is None:
            return default
        return compiled.values.get(name, default)

    def explain(self, key: str, **context: Any) -> dict[str, Any]:
        """Why this context gets what it gets: variant, payload, reason, version (never raises)."""
        compiled = self._compiled.get(key)
        if compiled is None:
            return {"flag": key, "variant": None, "value": None, "reason": "no such flag", "version": self.version}
        try:
            name, reason = compiled.explain(context)
        except Exception as exc:
            return {"flag": key, "variant": None, "value": None, "reason": f"error: {exc}", "version": self.version}
        return {
            "flag": key,
            "variant": name,
            "value": compiled.values.get(name),
            "enabled": (name == "true") if compiled.flag.is_boolean else name != compiled.flag.default,
            "reason": reason,
            "version": compiled.version,
        }

    def evaluate_all(self, **context: Any) -> dict[str, str | None]:
        """``{flag: variant}`` for every flag: put it in a conversation's metadata."""
        return {key: self.variant(key, None, **context) for key in sorted(self._picks)}

    def _failed(self, key: str, default: Any, context: Mapping[str, Any]) -> Any:
        try:
            self._picks[key](context)
            problem = "unknown error"
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
        _warn(key, "error", "evaluating %r failed (%s); serving the default %r", key, problem, default)
        return default

    def _expose(self, key: str, run: Any) -> None:
        try:
            version = self._compiled[key].version
            if (run.id, key, version) in self._exposed:
                return
            if len(self._exposed) > 100_000:
                self._exposed.clear()
            self._exposed.add((run.id, key, version))
            run.use(EntityRef("flag", key, version), "exposure")
            run.log_param(f"flags.{key}", version, overwrite=True)
        except Exception as exc:  # exposure logging never breaks the app
            _warn(key, "exposure", "could not log the exposure of %r: %s", key, exc)


class _Refresher(live.Listener):
    """Keeps one client current: its set is re-read when a flag changed in the store, when
    ``flags.yaml`` changed, and at least every ``refresh_seconds``."""

    kinds = frozenset({"flag"})

    def __init__(self, client: FlagClient, watcher: live.Watcher) -> None:
        self._client = weakref.ref(client)
        self.watcher = watcher
        self.env = client.env

    def __repr__(self) -> str:
        return f"the {self.env} flags"

    def alive(self) -> bool:
        client = self._client()
        return client is not None and not client._stop.is_set()

    def due(self) -> bool:
        client = self._client()
        if client is None:
            return False
        if time.monotonic() - client._loaded_mono > client.refresh_seconds:
            return True
        return client._file_signature() != client._file_seen

    def refresh(self, changed: bool) -> None:
        client = self._client()
        if client is None:
            return
        seen = client._file_signature()
        try:
            client._reload()
        except StoreError:
            raise  # the store does not answer: the refresher retries
        except Exception as exc:  # a broken flags.yaml (or stored set): try again once it changes
            client._file_seen = seen
            client._loaded_mono = time.monotonic()
            problem = "could not load the %s flags (keeping version %r): %s"
            _warn("*", "refresh", problem, client.env, client.version, exc)


def _changed(env: str) -> None:
    """After this process changed ``env``'s flags: its clients read them back now."""
    with _clients_lock:
        found = [c for c in _clients.values() if c.env == env and not c._stop.is_set()]
    for c in found:
        c.refresh()


_clients: dict[tuple[Any, ...], FlagClient] = {}
_clients_lock = threading.Lock()


def client(
    env: str = "production",
    refresh_seconds: float = 30,
    path: str | Path | None = None,
    log_exposures: bool = False,
) -> FlagClient:
    """The flag client of an environment (one per store, env and options in this process)."""
    session = get_session()
    service: FlagService = session.flags
    key = (env, refresh_seconds, None if path is None else str(path), log_exposures)
    with _clients_lock:
        found = _clients.get(key)
        if found is None or found._stop.is_set() or found._service is not service:
            if found is not None:
                found.close()  # another store (or closed): start afresh
            found = FlagClient(env, refresh_seconds, path, log_exposures, service, live.watcher(session))
            _clients[key] = found
        return found


def reset_clients() -> None:
    """Stop and forget every cached client (tests, long-lived hosts)."""
    with _clients_lock:
        for found in _clients.values():
            found.close()
        _clients.clear()


# -- management -------------------------------------------------------------------------
def _ms(at: AtLike | None) -> int | None:
    """``at`` as epoch ms, read here: a naive datetime is this machine's local time, even when
    the store is a keel server in another zone."""
    return None if at is None else parse_at(at)


def snapshot(env: str = "production", path: str | Path | None = None, at: AtLike | None = None) -> FlagSet:
    """The effective flag set of an environment (file flags overlaid by stored ones); ``at``
    (a datetime, ``"2026-12-07T10:00:00Z"``, ``"1733500000s"``: :func:`keel.core.times.parse_at`):
    the stored set in force at that time, over ``flags.yaml`` as it is now."""
    return _service().snapshot(env, path, at=_ms(at))


def list_flags(env: str = "production", path: str | Path | None = None, at: AtLike | None = None) -> list[Flag]:
    """Every flag in force in an environment (at time ``at``, as :func:`snapshot`), by key."""
    flags = snapshot(env, path, at).flags
    return [flags[k] for k in sorted(flags)]


def get(key: str, env: str = "production", path: str | Path | None = None, at: AtLike | None = None) -> Flag:
    """One flag's definition in force (at time ``at``, as :func:`snapshot`)."""
    return _service().get(key, env, path, at=_ms(at))


def set(
    key: str,
    spec: Mapping[str, Any] | None = None,
    *,
    env: str = "production",
    reason: str = "",
    who: str | None = None,
    replace: bool = False,
    **fields: Any,
) -> FlagChange:
    """Create or change a flag in the store: ``set("f", rollout=10)``,
    ``set("reranker", {"variants": {...}, "distribution": {...}})``. ``fields`` merge onto
    the current definition unless ``replace``."""
    change = _service().set(key, spec, env=env, reason=reason, who=who, merge=not replace, **fields)
    _changed(env)
    return change


def rollout(key: str, percent: Any, *, env: str = "production", reason: str = "", who: str | None = None) -> FlagChange:
    """Serve a boolean flag to ``percent`` (25, "25%") of units; sticky as it grows."""
    change = _service().rollout(key, percent, env, reason, who)
    _changed(env)
    return change


def kill(key: str, *, env: str = "production", reason: str = "", who: str | None = None) -> FlagChange:
    """The kill switch: serve the default to everyone."""
    change = _service().kill(key, env, reason, who)
    _changed(env)
    return change


def delete(key: str, *, env: str = "production", reason: str = "", who: str | None = None) -> Any:
    """Remove a flag from the store."""
    move = _service().delete(key, env, reason, who)
    _changed(env)
    return move


def history(key: str, env: str = "production") -> list[FlagHistoryEntry]:
    """Every change of a flag: who, when, why, from which flag-set version to which."""
    return _service().history(key, env)


def openfeature_provider(env: str = "production", refresh_seconds: float = 30, **options: Any) -> Any:
    """An OpenFeature provider over :func:`client` (needs ``openfeature-sdk``)."""
    from keel.integrations.openfeature import KeelProvider

    return KeelProvider(client(env, refresh_seconds, **options))
