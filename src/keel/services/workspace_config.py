"""The one reader of ``.keel/config.toml``: typed settings, and one clear error for a bad file.

The file (written by ``keel init``, committed to git)::

    [store]
    database = "keel.db"          # a file in .keel/, or a database URL
    objects = "objects"           # a folder in .keel/, or an object store URL
    server = "https://keel.example.com"   # optional: the keel server the workspace works against

    [data]
    link = "auto"                 # auto | reflink | hardlink | copy
    default_remote = "storage"

    [data.remotes]
    storage = "s3://my-bucket/keel-store"

    [conversations]
    redact = "builtin"            # or "package.module:function", or false

    [conversations.prices]        # USD per 1M tokens
    "my-finetune" = { prompt = 3.0, completion = 12.0 }

Every part of keel that reads the file calls :func:`read_workspace_config`,
so a malformed file gives the same :class:`~keel.errors.InvalidInput`
everywhere, naming the file and line (``.keel/config.toml:7: ...``) with a
hint. A missing file reads as the defaults (``exists`` is False). The file is
bounded (1 MiB) and read with the standard library only: opening a data
workspace must not load SQLAlchemy.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.errors import InvalidInput, StoreError

__all__ = [
    "CONFIG",
    "DIRNAME",
    "LINK_MODES",
    "MAX_CONFIG_BYTES",
    "ConversationSettings",
    "DataSettings",
    "StoreSettings",
    "WorkspaceConfig",
    "config_path",
    "read_workspace_config",
]

DIRNAME = ".keel"
CONFIG = "config.toml"
LINK_MODES = ("auto", "reflink", "hardlink", "copy")
MAX_CONFIG_BYTES = 1 << 20
_FIX = "fix .keel/config.toml (it is TOML; 'git diff .keel/config.toml' shows what changed)"
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]*?)\s*\]\]?\s*(?:#.*)?$")


@dataclass(frozen=True)
class StoreSettings:
    """``[store]``: where the workspace's metadata and objects are."""

    database: str = "keel.db"
    objects: str = "objects"
    server: str | None = None


@dataclass(frozen=True)
class DataSettings:
    """``[data]``: data versioning's link mode and remotes."""

    link: str = "auto"
    default_remote: str | None = None
    remotes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationSettings:
    """``[conversations]``: the redactor and extra model prices (checked where they are used)."""

    redact: str | bool | None = None
    prices: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkspaceConfig:
    """The whole file, typed; :func:`read_workspace_config` makes one."""

    path: Path
    exists: bool = False
    store: StoreSettings = field(default_factory=StoreSettings)
    data: DataSettings = field(default_factory=DataSettings)
    conversations: ConversationSettings = field(default_factory=ConversationSettings)


def config_path(root: str | os.PathLike[str]) -> Path:
    """``.keel/config.toml`` of the workspace at ``root``."""
    return Path(root) / DIRNAME / CONFIG


def read_workspace_config(root: str | os.PathLike[str]) -> WorkspaceConfig:
    """The typed config of the workspace at ``root`` (the defaults if it has no file).

    Raises:
        InvalidInput: the file is not valid TOML, not UTF-8, too large, or a setting has
            the wrong type or value (the message names the file and line).
        StoreError: the file exists but cannot be read (permissions).
    """
    path = config_path(root)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return WorkspaceConfig(path)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB", _FIX)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}:{line}: not UTF-8 text (byte {exc.start})", _FIX) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_AT.search(message)
        if at:
            message = f"{path}:{at.group(1)}: {message[: at.start()]} (column {at.group(2)})"
        else:
            message = f"{path}: {message}"
        raise InvalidInput(f"{message}: not valid TOML", _FIX) from None
    except (RecursionError, ValueError) as exc:  # absurd nesting or numbers tomllib cannot hold
        raise InvalidInput(f"{path}: not a valid config ({str(exc)[:80]})", _FIX) from None
    reader = _Reader(path, text, doc)
    return WorkspaceConfig(
        path=path,
        exists=True,
        store=reader.store(),
        data=reader.data(),
        conversations=reader.conversations(),
    )


class _Reader:
    """Typed access to a parsed document; errors name the line of the setting."""

    def __init__(self, path: Path, text: str, doc: dict[str, Any]) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.doc = doc

    def where(self, table: str, key: str | None = None) -> str:
        """``path:line`` of ``key`` in ``[table]`` (or of the table itself: its header, or the
        ``name = ...`` line that made it), as near as can be told; the bare path if not found."""
        full = f"{table}.{key}" if key is not None else table
        header = 0
        current = ""
        for number, line in enumerate(self.lines, 1):
            found = _HEADER.match(line)
            if found:
                current = found.group(1).replace('"', "").replace("'", "").replace(" ", "")
                if current == full:
                    return f"{self.path}:{number}"
                if current == table and not header:
                    header = number
                continue
            if "=" not in line:
                continue
            name = line.split("=", 1)[0].replace('"', "").replace("'", "").replace(" ", "")
            if (f"{current}.{name}" if current else name) == full:
                return f"{self.path}:{number}"
        return f"{self.path}:{header}" if header else str(self.path)

    def table(self, name: str) -> dict[str, Any]:
        value: Any = self.doc
        parts = name.split(".")
        for i, part in enumerate(parts):
            value = value.get(part, {})
            if not isinstance(value, dict):
                prefix = ".".join(parts[: i + 1])
                raise InvalidInput(f"{self.where(prefix)}: [{prefix}] must be a table, not {_kind(value)}", _FIX)
        return value  # type: ignore[no-any-return]

    def text(self, table: dict[str, Any], name: str, key: str, default: str | None) -> str | None:
        value = table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"{self.where(name, key)}: [{name}] {key} must be text, not {_kind(value)}", _FIX)
        return value

    def store(self) -> StoreSettings:
        section = self.table("store")
        database = self.text(section, "store", "database", "keel.db") or "keel.db"
        objects = self.text(section, "store", "objects", "objects") or "objects"
        server = self.text(section, "store", "server", None) or None
        return StoreSettings(database, objects, server)

    def data(self) -> DataSettings:
        section = self.table("data")
        remotes = self.table("data.remotes")
        for name, url in remotes.items():
            if not isinstance(url, str):
                raise InvalidInput(
                    f"{self.where('data.remotes', name)}: [data.remotes] {name} must be a URL or a folder (text), "
                    f"not {_kind(url)}",
                    _FIX,
                )
        link = self.text(section, "data", "link", "auto")
        if link not in LINK_MODES:
            raise InvalidInput(
                f"{self.where('data', 'link')}: [data] link = {link!r} is not one of {', '.join(LINK_MODES)}", _FIX
            )
        default = self.text(section, "data", "default_remote", None) or None
        return DataSettings(link, default, dict(remotes))

    def conversations(self) -> ConversationSettings:
        section = self.table("conversations")
        redact = section.get("redact")
        if redact is not None and not isinstance(redact, str | bool):
            raise InvalidInput(
                f"{self.where('conversations', 'redact')}: [conversations] redact must be text or false, "
                f"not {_kind(redact)}",
                'use redact = "builtin", "package.module:function" or false (see docs/conversations.md)',
            )
        prices = self.table("conversations.prices")
        return ConversationSettings(redact, dict(prices))


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "text", bool: "a boolean"}.get(type(value), type(value).__name__)
