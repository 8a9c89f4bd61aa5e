"""Pages of MLflow search results: ``max_results`` and an opaque ``page_token``."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from keel.errors import InvalidInput

__all__ = ["page_of"]

T = TypeVar("T")


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"invalid page_token {token!r}", "pass the next_page_token of a previous page") from exc
    if offset < 0:
        raise InvalidInput(f"invalid page_token {token!r}", "pass the next_page_token of a previous page")
    return offset


def page_of(items: Sequence[T], max_results: Any, token: str | None, limit: int = 50_000) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next (``""`` on the last page)."""
    try:
        size = int(max_results)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid max_results {max_results!r}", f"use 1..{limit}") from exc
    if not 1 <= size <= limit:
        raise InvalidInput(f"invalid max_results {size}", f"use 1..{limit}")
    start = _offset(token)
    end = start + size
    more = end < len(items)
    return list(items[start:end]), (base64.urlsafe_b64encode(str(end).encode()).decode() if more else "")
