"""Secrets out of the rows keel writes, and the workspace's own list of secret key names.

The rules are :mod:`keel.core.redaction` (pure); this module applies them where
rows of several kinds meet storage, and reads the list of extra secret names:

- :func:`redact_batch` masks secrets in a tracking :class:`~keel.core.batch.WriteBatch`
  before it is written: param values, tag values and run errors. Every way a run is
  logged (the sdk's background writer, the remote sdk's RPC, the REST batch route,
  the MLflow API, importers) reaches :meth:`TrackingService.write_batch`, so none
  can store a secret, whatever the caller did before.
- :func:`use_workspace_keys` registers the names a workspace lists as secret, in
  addition to the built-in ones, for every path in this process::

      # .keel/config.toml
      [redaction]
      keys = ["internal_ref", "x-tenant-signature"]   # keys named so (or ending so) are secret

  A process without a workspace (a team server) takes them from the environment:
  ``KEEL_REDACT_KEYS=internal_ref,x-tenant-signature``.
"""

from __future__ import annotations

import json
import os
import threading
import tomllib
from pathlib import Path

from keel.core.batch import WriteBatch
from keel.core.redaction import REDACTED, add_secret_keys, is_secret_key, redact_mapping, redact_tag, redact_value
from keel.errors import InvalidInput

__all__ = ["ENV_KEYS", "redact_batch", "use_workspace_keys", "workspace_keys", "workspace_root"]

ENV_KEYS = "KEEL_REDACT_KEYS"
_MAX_CONFIG_BYTES = 1 << 20
_MAX_KEYS = 1000
_seen: dict[str, tuple[int, int]] = {}  # workspace root -> (mtime_ns, size) of its config when read
_lock = threading.Lock()


def workspace_root(start: str | os.PathLike[str]) -> Path | None:
    """The nearest folder at or above ``start`` holding ``.keel/config.toml`` (without importing
    the store: a config load stays free of the database layer)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".keel" / "config.toml").is_file():
            return folder
    return None


def workspace_keys(root: str | os.PathLike[str] | None) -> list[str]:
    """The names ``[redaction] keys`` of the workspace at ``root`` lists (none without a file).

    Raises:
        InvalidInput: ``keys`` is not a list of text (the message names the file).
    """
    if root is None:
        return []
    path = Path(root) / ".keel" / "config.toml"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
    except OSError:
        return []
    if len(raw) > _MAX_CONFIG_BYTES or b"redaction" not in raw:
        return []  # an oversized or bad file is reported by the workspace's config reader
    try:
        section = tomllib.loads(raw.decode("utf-8")).get("redaction", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError, ValueError):
        return []
    keys = section.get("keys", []) if isinstance(section, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > _MAX_KEYS:
        raise InvalidInput(
            f"{path}: [redaction] keys must be a list of key names (text), at most {_MAX_KEYS}",
            'write keys = ["internal_ref", "x-tenant-signature"]',
        )
    return list(keys)


def use_workspace_keys(root: str | os.PathLike[str] | None) -> None:
    """Register the secret names of the workspace at ``root`` and of ``$KEEL_REDACT_KEYS``
    (see the module doc); cheap when nothing changed since the last call."""
    env = os.environ.get(ENV_KEYS)
    if env:
        add_secret_keys(k.strip() for k in env.split(",") if k.strip())
    if root is None:
        return
    path = Path(root) / ".keel" / "config.toml"
    try:
        stat = path.stat()
    except OSError:
        return
    key, stamp = str(path), (stat.st_mtime_ns, stat.st_size)
    with _lock:
        if _seen.get(key) == stamp:
            return
        _seen[key] = stamp
    add_secret_keys(workspace_keys(root))


def _param_text(key: str, vtype: str, text: str) -> str:
    """A stored param's text with secrets masked (the sdk masked it already; other callers may not)."""
    if is_secret_key(key):
        if vtype in ("bool", "null"):
            return text
        return json.dumps(REDACTED) if vtype == "json" else REDACTED
    if vtype == "str":
        return redact_value(text)  # type: ignore[no-any-return]
    if vtype != "json":
        return text
    masked = redact_value(text)
    try:
        value = json.loads(masked)
    except RecursionError:
        return text  # too deep: WriteBatch.validate refuses it
    except ValueError:
        return json.dumps(REDACTED)
    redacted = redact_mapping(value)
    if masked is text and redacted == value:
        return text
    return json.dumps(redacted, sort_keys=True, separators=(",", ":"))


def redact_batch(batch: WriteBatch) -> None:
    """Mask, in place, the secrets in ``batch``'s params, tags and run errors (see the module doc).
    Rows that are not well-formed are left to :meth:`WriteBatch.validate` to refuse."""
    params = batch.params
    if isinstance(params, list):
        for i, row in enumerate(params):
            if isinstance(row, list | tuple) and len(row) == 5 and isinstance(row[1], str) and isinstance(row[3], str):
                text = _param_text(row[1], str(row[2]), row[3])
                if text is not row[3]:
                    params[i] = (row[0], row[1], row[2], text, row[4])
    tags = batch.tags
    if isinstance(tags, list):
        for i, tag in enumerate(tags):
            if isinstance(tag, list | tuple) and len(tag) == 3 and isinstance(tag[1], str) and isinstance(tag[2], str):
                value = redact_tag(tag[1], tag[2])
                if value is not tag[2]:
                    tags[i] = (tag[0], tag[1], value)
    ends = batch.run_ends
    if isinstance(ends, list):
        for i, end in enumerate(ends):
            if isinstance(end, list | tuple) and len(end) == 4 and isinstance(end[3], str):
                error = redact_value(end[3])
                if error is not end[3]:
                    ends[i] = (end[0], end[1], end[2], error)
