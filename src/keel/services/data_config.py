"""Where data versioning keeps things in a workspace, and its settings.

- ``.keel/config.toml`` (committed to git, so a fresh clone knows its remotes)::

      [data]
      link = "auto"              # auto | reflink | hardlink | copy
      default_remote = "storage"

      [data.remotes]
      storage = "s3://my-bucket/keel-store"
      backup = "/mnt/backup/keel"

- ``.keel/data/`` (ignored by git): ``state.db`` (the stat cache and object
  index), ``lock`` and ``tmp/``.

The file is read by :mod:`keel.services.workspace_config` (the one typed
reader, which imports only the standard library), not through
``keel.services.workspace``: importing that one loads SQLAlchemy (~0.3 s),
and commands such as ``keel data status`` or ``checkout`` never touch the
metadata database.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from keel.errors import InvalidInput, NotFound, NoWorkspace, StoreError
from keel.fileio import atomic_write_text
from keel.services.workspace_config import CONFIG, DIRNAME, LINK_MODES, config_path, read_workspace_config

__all__ = [
    "LINK_MODES",
    "DataConfig",
    "check_link_mode",
    "config_path",
    "find_root",
    "read_config",
    "write_config",
]

_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass
class DataConfig:
    """The ``[data]`` settings of a workspace."""

    link: str = "auto"
    default_remote: str | None = None
    remotes: dict[str, str] = field(default_factory=dict)

    def remote_url(self, name: str | None) -> tuple[str, str]:
        """``(name, url)`` of remote ``name``, or of the default remote."""
        if name is None:
            name = self.default_remote
            if name is None:
                if len(self.remotes) == 1:
                    name = next(iter(self.remotes))
                else:
                    raise InvalidInput(
                        "no remote given and no default remote is set",
                        "add one with 'keel remote add -d NAME URL', or pass --remote NAME",
                    )
        if name not in self.remotes:
            known = ", ".join(sorted(self.remotes)) or "none"
            raise NotFound(f"no remote named {name!r} (remotes: {known})", "add it with 'keel remote add NAME URL'")
        return name, self.remotes[name]


def find_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder (holding ``.keel/config.toml``) at or above ``start``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        # keel.db too: checking out a commit older than config.toml removes it from the
        # working tree, and the data of that commit must still be restorable.
        if (folder / DIRNAME / CONFIG).is_file() or (folder / DIRNAME / "keel.db").is_file():
            return folder
    raise NoWorkspace(
        f"no keel workspace at {here} or above (no .keel/ folder)",
        "run 'keel init' at the top of your repository first",
    )


def check_link_mode(mode: str) -> str:
    """``mode`` if it is a known link mode, else raise InvalidInput."""
    if mode not in LINK_MODES:
        raise InvalidInput(f"unknown link mode {mode!r}", f"use one of: {', '.join(LINK_MODES)}")
    return mode


def check_remote_name(name: str) -> str:
    """``name`` if it is a valid remote name, else raise InvalidInput."""
    if not _REMOTE_NAME.fullmatch(name or ""):
        raise InvalidInput(f"invalid remote name {name!r}", "use letters, digits, '-' or '_' (at most 64)")
    return name


def read_config(root: Path) -> DataConfig:
    """The ``[data]`` section of the workspace config (defaults where absent); InvalidInput
    naming the file and line if it is malformed (see :mod:`keel.services.workspace_config`)."""
    data = read_workspace_config(root).data
    return DataConfig(link=data.link, default_remote=data.default_remote, remotes=dict(data.remotes))


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def write_config(root: Path, config: DataConfig) -> None:
    """Rewrite the ``[data]`` sections of the config; every other line is kept as it is."""
    path = config_path(root)
    kept: list[str] = []
    skipping = False
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            name = stripped.strip("[]").strip()
            skipping = name == "data" or name.startswith("data.")
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    out = [*kept, "", "[data]", f"link = {_toml_str(config.link)}"]
    if config.default_remote:
        out.append(f"default_remote = {_toml_str(config.default_remote)}")
    if config.remotes:
        out += ["", "[data.remotes]"]
        out += [f"{name} = {_toml_str(url)}" for name, url in sorted(config.remotes.items())]
    try:
        atomic_write_text(path, "\n".join(out) + "\n")
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}", "check the folder's permissions") from None
