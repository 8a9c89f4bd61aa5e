"""Who did it: the author every ref move and version carries (times: :mod:`keel.core.times`)."""

from __future__ import annotations

import functools
import getpass

__all__ = ["current_user", "who"]


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
