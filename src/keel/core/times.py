"""One time parser and one time printer for every "as of T" in keel.

A time copied from any keel output must give the same answer in any time zone.
So every time keel prints carries its offset, and every time keel reads is
either unambiguous or refused:

=================================  ==========================================
given                              read as
=================================  ==========================================
``datetime`` with a tzinfo         that instant
``datetime`` without one           local time of this process (Python's rule)
``date``                           local midnight at the start of that day
``int`` / ``float`` >= 1e11        epoch milliseconds (1e11 ms is March 1973)
``int`` / ``float`` below 1e11     refused: it looks like epoch *seconds*
``"1733500000s"``                  epoch seconds (a unit makes it explicit)
``"1733500000000ms"``              epoch milliseconds
``"2026-12-07T10:00:00Z"``         ISO 8601 with ``Z`` or an offset
``"2026-12-07T10:00:00"``          refused: a zoneless text is a different
                                   instant in every time zone
bare digits ``"1733500000"``       refused: seconds or milliseconds?
=================================  ==========================================

:func:`format_at` prints the other way: ISO 8601 in UTC with ``Z`` and
millisecond precision, the precision refs move with, so a printed time is
exactly the instant of the move (``--at`` with it answers *after* the move).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from keel.errors import InvalidInput

__all__ = ["MS_FLOOR", "AtLike", "format_at", "parse_at"]

#: Numbers from here up are milliseconds; below, they look like seconds (1e11 ms = 1973-03-03).
MS_FLOOR = 100_000_000_000
#: The last millisecond of the year 9999 (what datetime can name).
_MS_CEILING = 253_402_300_799_999

_HINT = (
    "give a time with its zone: 2026-12-07T10:00:00Z, 2026-12-07T11:00:00+01:00, "
    "epoch seconds with a unit (1733500000s) or milliseconds (1733500000000ms)"
)
_UNIT = re.compile(r"(\d{1,17}(?:\.\d{1,9})?)\s*(ms|s)")
_ZONE = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)$")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

AtLike = datetime | date | int | float | str


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounded(ms: float, value: Any) -> int:
    if not 0 <= ms <= _MS_CEILING:
        raise InvalidInput(f"time {_shown(value)} is out of range", "give a time between 1970 and 9999")
    return int(ms)


def parse_at(value: Any) -> int:
    """A time as epoch milliseconds, by the table in the module doc; anything else is
    InvalidInput saying how to write it (never a raw ValueError or TypeError)."""
    if isinstance(value, datetime):
        try:  # exact integer arithmetic: timestamp() * 1000 loses a millisecond past ~2100
            aware = value if value.tzinfo is not None else value.astimezone()
            return _bounded((aware - _EPOCH) // timedelta(milliseconds=1), value)
        except (OverflowError, OSError, ValueError):
            raise InvalidInput(f"time {_shown(value)} is out of range", "give a time between 1970 and 9999") from None
    if isinstance(value, date):
        return parse_at(datetime(value.year, value.month, value.day))
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"time {_shown(value)} is not a time", _HINT)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidInput(f"time {_shown(value)} is not a time", _HINT)
        if abs(value) < MS_FLOOR:
            raise InvalidInput(
                f"time {_shown(value)} looks like epoch seconds, and numbers are read as milliseconds",
                f"pass milliseconds (int(time.time() * 1000)), a datetime, or text with a unit: '{int(value)}s'",
            )
        return _bounded(value, value)
    if not isinstance(value, str):
        raise InvalidInput(f"time {_shown(value)} is not a time", _HINT)
    text = value.strip()
    if len(text) > 64:
        raise InvalidInput(f"time {_shown(value)} is not a time", _HINT)
    unit = _UNIT.fullmatch(text)
    if unit:
        number = float(unit.group(1))
        return _bounded(number * 1000 if unit.group(2) == "s" else number, value)
    if text.isascii() and text.isdigit():
        raise InvalidInput(
            f"time {_shown(value)} has no unit: seconds or milliseconds?",
            f"write {text}s for epoch seconds or {text}ms for milliseconds",
        )
    if text.endswith("z"):
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"time {_shown(value)} is not a time", _HINT) from None
    if parsed.tzinfo is None or not _ZONE.search(text):
        raise InvalidInput(
            f"time {_shown(value)} has no time zone, so it means a different instant in every zone",
            f"add Z for UTC or an offset: {parsed.isoformat()}Z or {parsed.isoformat()}+01:00",
        )
    return parse_at(parsed)


def format_at(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 in UTC with ``Z`` and milliseconds
    (``2026-12-07T10:00:00.123Z``); ``""`` for None. :func:`parse_at` reads it back exactly."""
    if ms is None:
        return ""
    seconds, millis = divmod(int(ms), 1000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"
