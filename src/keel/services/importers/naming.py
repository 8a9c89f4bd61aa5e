"""Names and ids for imported things: keel's rules applied to other tools' names."""

from __future__ import annotations

import re

import blake3

__all__ = ["derived_run_id", "safe_name"]

_BAD_NAME = re.compile(r"[^A-Za-z0-9._\-/ ]+")


def safe_name(text: str, default: str) -> str:
    """``text`` as a valid keel project or run name: characters keel does not allow
    become ``-``, 200 characters at most; ``default`` if nothing is left."""
    cleaned = _BAD_NAME.sub("-", str(text)).strip(" -/.")[:200].strip(" -/.")
    return cleaned or default


def derived_run_id(system: str, source_id: str) -> str:
    """A stable 32-hex keel run id for a run known elsewhere as ``source_id``: importing
    the same run again finds the same id."""
    return blake3.blake3(f"{system}-run:{source_id}".encode()).hexdigest()[:32]
