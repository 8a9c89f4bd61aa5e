"""Where a keel server is, and the token to reach it with: base URLs and the credentials file.

Tokens live in ``credentials.toml`` under ``$KEEL_CONFIG_DIR`` (default
``$XDG_CONFIG_HOME/keel``, else ``~/.config/keel``), one table per server::

    ["http://keel.example.com:8000"]
    token = "keel_..."

The file is created readable by its owner only (0600, in a 0700 folder) and is
rewritten atomically (a temporary file renamed over it), so a crash leaves the
previous file whole. ``KEEL_TOKEN`` wins over the file. Nothing here logs a token.

This module needs only the standard library: asking for a token does not load
the HTTP client.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from keel.errors import InvalidInput, StoreError
from keel.fileio import atomic_write_text

__all__ = [
    "ENV_CONFIG_DIR",
    "ENV_TOKEN",
    "credentials_path",
    "forget_token",
    "normalize_base_url",
    "save_token",
    "token_for",
]

ENV_TOKEN = "KEEL_TOKEN"
ENV_CONFIG_DIR = "KEEL_CONFIG_DIR"


def normalize_base_url(base_url: str) -> str:
    """``scheme://host[:port][/path]`` with a lowercase scheme and host and no trailing slash.

    Raises InvalidInput unless it is an ``http://`` or ``https://`` URL with a host
    and no user or password in it.
    """
    parts = urlsplit((base_url or "").strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"invalid keel server URL {base_url!r}", "write http://host:port or https://host (no credentials in it)"
        )
    if parts.username or parts.password:
        raise InvalidInput(
            "a keel server URL must not hold credentials", "pass the token with KEEL_TOKEN or 'keel login'"
        )
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(f"invalid port in {base_url!r}", "write http://host:port") from None
    netloc = f"{host}:{port}" if port is not None else host
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def credentials_path() -> Path:
    """``credentials.toml`` in ``$KEEL_CONFIG_DIR``, ``$XDG_CONFIG_HOME/keel`` or ``~/.config/keel``."""
    folder = os.environ.get(ENV_CONFIG_DIR)
    if folder:
        return Path(folder).expanduser() / "credentials.toml"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "keel" / "credentials.toml"


def _read_credentials(path: Path) -> dict[str, str]:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StoreError(f"cannot read {path}: {exc}", "fix the file, or delete it and run 'keel login' again") from exc
    return {
        url: str(entry["token"])
        for url, entry in doc.items()
        if isinstance(entry, dict) and isinstance(entry.get("token"), str)
    }


def _write_credentials(path: Path, entries: dict[str, str]) -> None:
    """Rewrite the file atomically; it is created readable by its owner only (0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StoreError(f"cannot create {path.parent}: {exc.strerror}", "check the folder's permissions") from None
    lines = ["# keel API tokens, one table per server (written by 'keel login'; keep private)"]
    for url, token in sorted(entries.items()):
        # A JSON string (ASCII, escaped) is a valid TOML basic string.
        lines += ["", f"[{json.dumps(url)}]", f"token = {json.dumps(token)}"]
    try:
        atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)  # created 0600: never readable by others
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}", "check the folder's permissions") from None


def token_for(base_url: str) -> str | None:
    """The token to use with the server at ``base_url``: ``KEEL_TOKEN``, else its
    entry in the credentials file, else None."""
    env = os.environ.get(ENV_TOKEN)
    if env and env.strip():
        return env.strip()
    return _read_credentials(credentials_path()).get(normalize_base_url(base_url))


def save_token(base_url: str, token: str) -> Path:
    """Remember ``token`` for ``base_url`` in the credentials file (0600); returns its path."""
    if not token or not token.strip() or any(c.isspace() for c in token.strip()):
        raise InvalidInput("the token is empty or holds spaces", "paste the token 'keel server token create' printed")
    path = credentials_path()
    entries = _read_credentials(path)
    entries[normalize_base_url(base_url)] = token.strip()
    _write_credentials(path, entries)
    return path


def forget_token(base_url: str) -> bool:
    """Remove the stored token of ``base_url``; True if there was one."""
    path = credentials_path()
    entries = _read_credentials(path)
    if entries.pop(normalize_base_url(base_url), None) is None:
        return False
    _write_credentials(path, entries)
    return True
