"""Pages of MLflow search results: ``max_results`` and an opaque ``page_token``."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, TypeVar

from keel.core.limits import MAX_PAGE_OFFSET, MAX_PAGE_SIZE, MAX_PAGE_TOKEN_LENGTH
from keel.errors import InvalidInput

__all__ = ["page_of", "page_size"]

T = TypeVar("T")


def _bad_token(token: Any) -> InvalidInput:
    shown = repr(token)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InvalidInput(f"invalid page_token {shown}", "pass the next_page_token of a previous page")


def _offset(token: Any) -> int:
    if token is None or token == "":
        return 0
    if not isinstance(token, str) or len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise _bad_token(token)
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        offset = int(text) if len(text) <= 20 else -1
    except (ValueError, UnicodeError) as exc:
        raise _bad_token(token) from exc
    if not 0 <= offset <= MAX_PAGE_OFFSET:
        raise _bad_token(token)
    return offset


def page_size(max_results: Any, default: int, limit: int = MAX_PAGE_SIZE) -> int:
    """``max_results`` as a page size in ``1..limit`` (``default`` when absent); InvalidInput otherwise.

    MLflow's clients send a JSON number (or, in a query string, its text).
    """
    if max_results is None:
        return default
    size: int | None = None
    if isinstance(max_results, int) and not isinstance(max_results, bool):
        size = max_results
    elif isinstance(max_results, float) and max_results.is_integer():
        size = int(max_results)
    elif isinstance(max_results, str):
        text = max_results.strip()
        size = int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None
    if size is None or not 1 <= size <= limit:
        shown = repr(max_results)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise InvalidInput(f"invalid max_results {shown}", f"use a whole number in 1..{limit:,}")
    return size


def page_of(items: Sequence[T], max_results: Any, token: str | None, limit: int = MAX_PAGE_SIZE) -> tuple[list[T], str]:
    """One page of ``items`` and the token of the next (``""`` on the last page)."""
    size = page_size(max_results, limit, limit)
    start = _offset(token)
    end = start + size
    more = end < len(items)
    return list(items[start:end]), (base64.urlsafe_b64encode(str(end).encode()).decode() if more else "")
