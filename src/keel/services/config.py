"""Environment configuration: load, validate, snapshot, diff, history.

:func:`load` reads ``<directory>/base.yaml`` (optional) and ``<directory>/<env>.yaml``,
applies ``KEEL_CONFIG__a__b=v`` variables and ``--set a.b=v`` items, interpolates
``${VAR}`` / ``${VAR:-default}`` and optionally validates against a pydantic model
class or a JSON Schema (a file, or a mapping). It touches no database, so loading
costs only the YAML parse (about a millisecond); the database layer is imported
only by :class:`ConfigService`, which records snapshots and answers history.

A *snapshot* is the resolved config with every secret replaced by ``***``, as
canonical JSON: its BLAKE3 hash is its id, the object is stored once, and a
``config_snapshots`` row per (hash, env) says where it came from. A run that
used it has the lineage input ``config:<env>@<hash[:12]>`` and the snapshot
as its artifact ``config/<env>.json``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.core.config import (
    Layer,
    Resolved,
    deep_merge,
    get_path,
    is_secret_path,
    override_layer,
    parse_layer,
    resolve,
    validate_json_schema,
)
from keel.core.entities import EntityRef
from keel.core.hashing import canonical_json, hash_bytes
from keel.core.model_card import CardChange, card_changes
from keel.core.redaction import redact_value
from keel.core.times import format_at, parse_at
from keel.errors import InvalidInput, NotFound
from keel.services.contract import (
    operation,
    service,
)
from keel.services.redaction import use_workspace_keys, workspace_root

if TYPE_CHECKING:
    from keel.services.workspace import Store

__all__ = [
    "ConfigService",
    "ConfigSnapshot",
    "LoadedConfig",
    "available_envs",
    "diff",
    "load",
    "prompt_ref",
]

_ENV = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadedConfig:
    """A resolved configuration for one environment."""

    env: str
    files: list[str]
    resolved: Resolved
    validated: Any = None  # the pydantic model instance, when validated against one
    _snapshot: bytes | None = field(default=None, repr=False)

    @property
    def data(self) -> dict[str, Any]:
        """The resolved values (secrets included: for the application, never for output)."""
        return self.resolved.data

    @property
    def sources(self) -> list[str]:
        """The files, then the overrides, in the order they were applied."""
        return [layer.source for layer in self.resolved.layers]

    def redacted(self) -> dict[str, Any]:
        """The values with every secret as ``***``."""
        return self.resolved.redacted()

    @property
    def snapshot(self) -> bytes:
        """The stored form: canonical JSON of the redacted config."""
        if self._snapshot is None:
            self._snapshot = canonical_json(self.redacted())
        return self._snapshot

    @property
    def hash(self) -> str:
        """The snapshot's object id (BLAKE3 hex)."""
        return hash_bytes(self.snapshot)

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``config:<env>@<hash[:12]>``."""
        return EntityRef("config", self.env, self.hash[:12])


@dataclass(frozen=True)
class ConfigSnapshot:
    """A recorded snapshot and the runs that used it."""

    hash: str
    env: str
    sources: list[str]
    created_at: int
    runs: list[str] = field(default_factory=list)

    @property
    def entity(self) -> EntityRef:
        """The lineage reference ``config:<env>@<hash[:12]>``."""
        return EntityRef("config", self.env, self.hash[:12])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "hash": self.hash,
            "env": self.env,
            "ref": str(self.entity),
            "sources": list(self.sources),
            "created_at": self.created_at,
            "runs": list(self.runs),
        }


def available_envs(directory: str | os.PathLike[str] = "config") -> list[str]:
    """The environments ``directory`` holds a file for (``base`` is not one)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted({n.rsplit(".", 1)[0] for n in names if n.endswith(_SUFFIXES)} - {"base"})


def _find(directory: str, stem: str) -> str | None:
    for suffix in _SUFFIXES:
        path = os.path.join(directory, stem + suffix)
        if os.path.isfile(path):
            return path
    return None


def _read_layer(path: str) -> Layer:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text", "save the config file as UTF-8") from None
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
    return parse_layer(text, path)


def load(
    env: str,
    directory: str | os.PathLike[str] = "config",
    overrides: Sequence[str] | Mapping[str, Any] = (),
    schema: Any = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Resolve the configuration of ``env`` (see the module doc).

    ``overrides``: ``["llm.temperature=0.2", ...]`` (values read as YAML) or a mapping
    ``{"llm.temperature": 0.2}``. ``environ`` defaults to ``os.environ`` (for both
    interpolation and ``KEEL_CONFIG__`` variables).

    Raises:
        NotFound: no ``<directory>/<env>.yaml`` (the message lists the environments there).
        InvalidInput: malformed YAML, an unset variable without a default, a bad override,
            or a value the schema rejects; each names the key path and file:line.
    """
    if not isinstance(env, str) or not _ENV.fullmatch(env):
        raise InvalidInput(f"invalid environment name {env!r}", "use letters, digits, '-', '_' or '.': production")
    folder = os.fspath(directory)
    environ = os.environ if environ is None else environ
    files = []
    base = _find(folder, "base")
    if base is not None:
        files.append(base)
    own = base if env == "base" else _find(folder, env)
    if own is None:
        envs = available_envs(folder)
        if not os.path.isdir(folder):
            raise NotFound(f"no configuration directory {folder!r}", f"create {os.path.join(folder, env + '.yaml')}")
        raise NotFound(
            f"unknown environment {env!r}: there is no {os.path.join(folder, env + '.yaml')}",
            f"available environments: {', '.join(envs)}" if envs else f"create {folder}/{env}.yaml",
        )
    if own != base:
        files.append(own)
    _use_workspace_keys(folder)
    layers = [_read_layer(path) for path in files]
    merged: dict[str, Any] = {}
    if any(name.startswith("KEEL_CONFIG__") for name in environ) or overrides:
        for layer in layers:
            merged = deep_merge(merged, layer.data)  # to match variable names to existing keys
        items = [f"{k}={_yaml_text(v)}" for k, v in overrides.items()] if isinstance(overrides, Mapping) else overrides
        layers += override_layer(list(items), environ, merged)
    resolved = resolve(layers, environ)
    loaded = LoadedConfig(env, files, resolved)
    if schema is not None:
        loaded.validated = validate(resolved, schema)
    return loaded


@functools.lru_cache(maxsize=64)
def _workspace_of(folder: str) -> Path | None:
    return workspace_root(folder)


def _use_workspace_keys(folder: str) -> None:
    """The ``[redaction] keys`` of the workspace the config folder is in apply to what is shown
    and snapshotted (with the built-in names and ``!secret``)."""
    use_workspace_keys(_workspace_of(os.path.abspath(folder)))


def _yaml_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- validation -----------------------------------------------------------------------------------
def validate(resolved: Resolved, schema: Any) -> Any:
    """Check ``resolved`` against a pydantic model class, a JSON Schema mapping or a schema file.

    Returns the pydantic model instance (None for a JSON Schema).
    """
    if hasattr(schema, "model_validate"):
        return _validate_pydantic(resolved, schema)
    if isinstance(schema, str | os.PathLike):
        schema = _read_schema(os.fspath(schema))
    if not isinstance(schema, Mapping):
        raise InvalidInput(
            f"a config schema must be a pydantic model class, a JSON Schema or its file, not {type(schema).__name__}",
            "pass schema=MyModel or schema='config/schema.json'",
        )
    problems = validate_json_schema(resolved.data, schema)
    if problems:
        _raise_invalid(resolved, [(path, _no_value(resolved, path, text)) for path, text in problems])
    return None


def _read_schema(path: str) -> Mapping[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        raise NotFound(f"no schema file {path!r}", "check the path") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}", "fix the JSON syntax") from None
    else:
        data = parse_layer(text, path).data
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{path} is not a JSON Schema (an object)", 'write {"type": "object", ...}')
    return data


def _validate_pydantic(resolved: Resolved, model: Any) -> Any:
    try:
        return model.model_validate(resolved.data)
    except Exception as exc:  # pydantic.ValidationError, without importing pydantic
        errors = getattr(exc, "errors", None)
        if not callable(errors):
            raise
        problems = []
        for error in errors():
            loc = [str(p) for p in error.get("loc", ())]
            path = ".".join(loc) or "(top)"
            message = str(error.get("msg", "is invalid"))
            if error.get("type") == "missing" and len(loc) > 0:
                path, message = ".".join(loc[:-1]) or "(top)", f"is missing the required key {loc[-1]!r}"
            problems.append((path, message))
        _raise_invalid(resolved, problems)
    return None


def _no_value(resolved: Resolved, path: str, text: str) -> str:
    """Never show a secret's value in an error (nor a secret inside another value)."""
    if is_secret_path(path, resolved.secrets):
        return text.split(", not ")[0]
    return redact_value(text)  # type: ignore[no-any-return]


def _raise_invalid(resolved: Resolved, problems: list[tuple[str, str]]) -> None:
    files = " + ".join(layer.source for layer in resolved.layers if not layer.literal) or "overrides"
    lines = [
        f"{path} ({files if path == '(top)' else resolved.where(path)}) {_no_value(resolved, path, text)}"
        for path, text in problems[:5]
    ]
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise InvalidInput(
        "config does not match the schema: " + "; ".join(lines) + more, "fix the value at that file and line"
    )


# -- prompts and diffs ------------------------------------------------------------------------------
def prompt_ref(data: Mapping[str, Any], name: str | None = None) -> str:
    """The prompt reference a config names: ``prompt: chat@1.3.0``, ``prompt: {version: chat@1.3.0}``
    or ``prompt: {name: chat, version: production}``; ``name`` supplies or replaces the name."""
    section = data.get("prompt")
    if isinstance(section, str):
        base, _, selector = section.partition("@")
        return f"{name or base}@{selector}" if selector else (name or base)
    if not isinstance(section, Mapping):
        raise InvalidInput("the config has no prompt section", "add prompt: {name: chat, version: production}")
    version: Any = section.get("version")
    if isinstance(version, bool) or isinstance(version, int | float):
        raise InvalidInput(f"prompt.version {version!r} is a number, not text", 'quote it in YAML: version: "1.3.0"')
    own: Any = section.get("name")
    if isinstance(version, str) and "@" in version:
        own, _, version = version.partition("@")
    chosen = name or own
    if not chosen:
        raise InvalidInput(
            "the config's prompt section names no prompt",
            "add prompt.name (prompt: {name: chat, version: v1.3}) or call cfg.load_prompt('chat')",
        )
    return f"{chosen}@{version}" if version else str(chosen)


def diff(a: LoadedConfig, b: LoadedConfig) -> list[CardChange]:
    """Every leaf that differs between two configs (redacted: a changed secret shows as ``***``)."""
    return card_changes(a.redacted(), b.redacted())


def source_of(loaded: LoadedConfig, path: str) -> str:
    """Where the value at ``path`` came from (``config/production.yaml:4``, ``env KEEL_CONFIG__...``,
    ``--set llm.temperature``); NotFound if the config has no such key."""
    try:
        get_path(loaded.data, path)
    except KeyError:
        raise NotFound(f"the {loaded.env} config has no key {path!r}", "see them with keel config show") from None
    return loaded.resolved.where(path)


# -- snapshots in a store ------------------------------------------------------------------------
@service("config")
class ConfigService:
    """Snapshots and their history in one store."""

    def __init__(self, store: Store) -> None:
        from keel.meta.config import RawConfig

        self.store = store
        self.raw = RawConfig(store.db)
        self._recorded: set[tuple[str, str]] = set()

    @operation("writer")
    def record(self, loaded: LoadedConfig) -> ConfigSnapshot:
        """Store the snapshot object (once) and its row (once per env); returns it."""
        digest = loaded.hash
        key = (digest, loaded.env)
        self.store.objects.put_bytes(loaded.snapshot)
        row, _ = self.raw.record(digest, loaded.env, loaded.sources)
        self._recorded.add(key)
        return ConfigSnapshot(row.hash, row.env, row.sources, row.created_at)

    @operation("reader")
    def is_recorded(self, loaded: LoadedConfig) -> bool:
        """True if this process recorded the snapshot already."""
        return (loaded.hash, loaded.env) in self._recorded

    @operation("reader")
    def history(self, env: str | None = None) -> list[ConfigSnapshot]:
        """Every snapshot (of ``env``), newest first, each with the runs that used it."""
        uses = self.raw.uses()
        return [
            ConfigSnapshot(r.hash, r.env, r.sources, r.created_at, uses.get((r.env, r.hash[:12]), []))
            for r in self.raw.snapshots(env)
        ]

    @operation("reader")
    def at(self, env: str, at: int | float | str | datetime) -> ConfigSnapshot:
        """The snapshot of ``env`` in use at time ``at`` (anything :func:`keel.core.times.parse_at`
        reads): the newest recorded at or before it, or a later-recorded one's return as a run's
        input by then (a snapshot is stored once, so changing a config back records nothing new).

        Raises:
            NotFound: nothing was recorded for ``env`` by then (the message names the time).
        """
        if not isinstance(env, str) or not _ENV.fullmatch(env):
            raise InvalidInput(f"invalid environment name {env!r}", "use letters, digits, '-', '_' or '.': production")
        ms = parse_at(at)
        row = self.raw.as_of(env, ms)
        if row is None:
            first = self.raw.first(env)
            hint = (
                f"its first snapshot was recorded at {format_at(first.created_at)}: "
                f"see 'keel config history --env {env}'"
                if first is not None
                else "a snapshot is recorded when a run loads the config (or cfg.save()): see 'keel config history'"
            )
            raise NotFound(f"no config snapshot of {env!r} was recorded by {format_at(ms)}", hint)
        return ConfigSnapshot(row.hash, row.env, row.sources, row.created_at)

    @operation("reader")
    def get(self, ref: str) -> tuple[ConfigSnapshot, dict[str, Any]]:
        """A snapshot by hash (or a prefix of at least 6 digits) with its redacted content."""
        text = ref.split("@")[-1].strip().lower()
        if len(text) < 6:
            raise InvalidInput(f"snapshot id {ref!r} is too short", "give at least 6 hex digits")
        rows = self.raw.find(text)
        if not rows:
            raise NotFound(f"no config snapshot {ref!r}", "list them with keel config history")
        if len({r.hash for r in rows}) > 1:
            raise InvalidInput(f"snapshot id {ref!r} is ambiguous", "give more digits")
        row = rows[0]
        content = json.loads(self.store.objects.get_bytes(row.hash))
        return ConfigSnapshot(row.hash, row.env, row.sources, row.created_at), content
