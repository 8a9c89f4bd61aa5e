"""Who did it and when: the audit fields every ref move and version carries."""

from __future__ import annotations

import functools
import getpass
import math
from datetime import datetime

from keel.core.checks import INT64_MAX, INT64_MIN
from keel.errors import InvalidInput

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
    """A datetime or epoch milliseconds, as epoch milliseconds (InvalidInput for NaN, infinity
    or a time outside the 64-bit millisecond range)."""
    if isinstance(at, datetime):
        try:
            return int(at.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(f"time {at!r} is out of range", "give a time between 1970 and 9999") from None
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise InvalidInput(f"time {at!r} is not a timestamp", "give epoch milliseconds or a datetime")
    ms = int(at)
    if not INT64_MIN <= ms <= INT64_MAX:
        raise InvalidInput(f"time {at!r} is out of range", "give epoch milliseconds or a datetime")
    return ms
