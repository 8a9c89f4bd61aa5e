"""Who did it and when: the audit fields every ref move and version carries."""

from __future__ import annotations

import functools
import getpass
from datetime import datetime

__all__ = ["current_user", "to_ms", "who"]


def who(author: str | None) -> str:
    """The given author, or the operating-system user running keel."""
    return author or current_user()


@functools.lru_cache(maxsize=1)
def current_user() -> str:
    """The login name of this process's user ("" if the system has none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database
        return ""


def to_ms(at: int | float | datetime) -> int:
    """A datetime or epoch milliseconds, as epoch milliseconds."""
    if isinstance(at, datetime):
        return int(at.timestamp() * 1000)
    return int(at)
