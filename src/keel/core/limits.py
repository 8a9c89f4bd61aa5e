"""Bounds on every search query, in one place.

A search is user text that becomes SQL: a filter (``metrics.acc > 0.8 and
...``), sort keys, a page size and a page token. Each part is bounded here and
checked before any SQL runs (:mod:`keel.core.filters` for the text and the
parsed query, the services for pages), so no input can make the parser recurse
without end, build a query the database cannot plan (SQLite 3.40 crashes the
process on a 31-join ORDER BY), or bind a value the driver cannot take.

Every refusal is a :class:`~keel.errors.FilterSyntaxError` (for filter and
sort text, pointing at the position) or an :class:`~keel.errors.InvalidInput`.
"""

from __future__ import annotations

from keel.core.checks import INT64_MAX, INT64_MIN

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_FIELD_KEY_LENGTH",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_TERMS",
    "MAX_FILTER_VALUES",
    "MAX_PAGE_OFFSET",
    "MAX_PAGE_SIZE",
    "MAX_PAGE_TOKEN_LENGTH",
    "MAX_QUERY_KEYS",
    "MAX_SORT_KEYS",
]

#: Longest filter (and longest sort text), in characters.
MAX_FILTER_LENGTH = 10_000
#: Deepest nesting of parentheses and ``not`` in a filter.
MAX_FILTER_DEPTH = 32
#: Most comparisons (``field op value``) in one filter.
MAX_FILTER_TERMS = 100
#: Most literal values in one filter (``in (...)`` lists included).
MAX_FILTER_VALUES = 1_000
#: Most sort keys (``order_by`` clauses) in one search.
MAX_SORT_KEYS = 10
#: Most distinct metric/param/tag keys one search refers to, filter and sort together:
#: each becomes a join (or a subquery), so this bounds the shape of the SQL.
MAX_QUERY_KEYS = 20
#: Longest key after a prefix (``params.<key>``): the longest key keel stores.
MAX_FIELD_KEY_LENGTH = 250

#: Integer literals must fit the database's 64-bit integers.

#: Largest page of results (keel's ``limit``; MLflow's own bound of ``max_results`` for runs/search).
MAX_PAGE_SIZE = 50_000
#: Longest page token a client may send back (keel's tokens are a few dozen characters).
MAX_PAGE_TOKEN_LENGTH = 256
#: Largest offset a page token may hold.
MAX_PAGE_OFFSET = 1 << 40
