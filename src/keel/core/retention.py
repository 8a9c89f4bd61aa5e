"""Retention periods: what may expire, and ages written as ``30d`` (pure, no I/O).

Only records about what an application logged expire: conversations, recorded LLM calls and
traces. Runs, versions, aliases and the reflog are never expired by retention (they are the
history that explains a result); deleted runs go only when someone purges them.
"""

from __future__ import annotations

import re

from keel.errors import InvalidInput

__all__ = ["EXPIRING", "REGISTRIES_SCOPE", "WORKSPACE_KINDS", "check_kind", "format_age", "parse_age"]

#: The kinds of records a retention policy may expire.
EXPIRING = ("conversations", "llm_calls", "traces")
#: Kinds stored workspace-wide (no project column): their policy is set on ``@registries``.
WORKSPACE_KINDS = ("conversations", "llm_calls")
REGISTRIES_SCOPE = "@registries"

_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_AGE = re.compile(r"([0-9]{1,9})\s*([smhdw])")
MIN_AGE_MS = 60_000  # shorter than a minute is a typo, not a policy (tests use their own clock)
MAX_AGE_MS = 100 * 365 * 86_400_000


def parse_age(text: object, what: str = "age") -> int:
    """``30d`` (``s``, ``m``, ``h``, ``d``, ``w``) as milliseconds; InvalidInput otherwise."""
    match = _AGE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"invalid {what} {str(text)[:40]!r}", "write a whole number and a unit: 30d, 12w, 24h")
    ms = int(match.group(1)) * _UNITS[match.group(2)]
    if not MIN_AGE_MS <= ms <= MAX_AGE_MS:
        raise InvalidInput(f"invalid {what} {text!r}: out of range", "give at least 1m and at most 100 years")
    return ms


def format_age(ms: int) -> str:
    """Milliseconds as the largest whole unit: 2_592_000_000 -> ``30d``."""
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def check_kind(kind: object) -> str:
    """``kind`` if retention may expire it; InvalidInput naming the kinds otherwise."""
    if kind not in EXPIRING:
        never = " (runs, versions, aliases and the reflog never expire: purge deleted runs with 'keel runs purge')"
        raise InvalidInput(f"no retention for {str(kind)[:40]!r}{never}", f"use one of {', '.join(EXPIRING)}")
    return str(kind)
