"""The top-k window gives exactly the answer of the full query, on both databases.

The window (see ``keel.meta.search.compile_search``) is shrunk to a few runs
so that every path is taken: the window settles the page, the window holds
too few matches and the full query runs, ties at the window's edge, runs
without the order metric, offsets past the window.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from keel.core.batch import WriteBatch
from keel.core.entities import new_run_id
from keel.core.filters import parse_filter, parse_order_by
from keel.core.values import encode_param
from keel.meta import open_database
from keel.meta import tracking as tracking_module
from keel.meta.migrate import ensure_schema
from keel.meta.tracking import TrackingStore


def _seeded(url: str) -> Iterator[TrackingStore]:
    db = open_database(url)
    ensure_schema(db)
    store = TrackingStore(db)
    rng = random.Random(7)
    batch = WriteBatch()
    for i in range(80):
        run_id = new_run_id()
        batch.new_runs.append((run_id, "p", f"r{i}", 1_000 + i, None, "{}"))
        batch.params.append((run_id, "i", *encode_param("i", i), False))
        if i % 9:  # some runs lack the order metric
            value = round(rng.random(), 1) if i % 4 else 0.5  # many ties
            batch.metrics.append((run_id, "order", value, 0, 1))
        batch.metrics.append((run_id, "filter", rng.random(), 0, 1))
    store.write_batch(batch)
    yield store
    db.close()


@pytest.fixture(scope="module")
def shared_store(module_database_url: str) -> Iterator[TrackingStore]:
    """80 runs (ties, runs without the order metric), for the searches that only read them."""
    yield from _seeded(module_database_url)


@pytest.fixture
def store(database_url: str) -> Iterator[TrackingStore]:
    """The same 80 runs, for a test that adds to them."""
    yield from _seeded(database_url)


def _page(store: TrackingStore, filter_text: str, order: str, limit: int, offset: int) -> tuple[list[str], bool]:
    node = parse_filter(filter_text) if filter_text else None
    records, more = store.search(None, node, parse_order_by([order]), limit, offset)
    return [r.name for r in records], more


@pytest.mark.parametrize("order", ["metrics.order asc", "metrics.order desc"])
@pytest.mark.parametrize("filter_text", ["", "metrics.filter > 0.2", "metrics.filter > 0.95", "params.i >= 70"])
@pytest.mark.parametrize(("limit", "offset"), [(3, 0), (5, 4), (10, 60), (100, 0)])
def test_windowed_search_equals_the_full_query(shared_store, monkeypatch, order, filter_text, limit, offset):
    expected = _page(shared_store, filter_text, order, limit, offset)  # window larger than the data: full query
    monkeypatch.setattr(tracking_module, "_SEARCH_WINDOW", 2)
    monkeypatch.setattr(tracking_module, "_WINDOW_FACTOR", 1)
    assert _page(shared_store, filter_text, order, limit, offset) == expected


def test_compiled_statements_are_reused_only_for_the_same_query(store):
    store.write_batch(
        WriteBatch(params=[(store.search(None, None, [], 1)[0][0].run_id, "flag", "bool", "true", False)])
    )
    one = _page(store, "params.flag = 1", "metrics.order asc", 5, 0)
    true = _page(store, "params.flag = true", "metrics.order asc", 5, 0)
    again = _page(store, "params.flag = 1", "metrics.order asc", 5, 0)
    assert one == again and one[0] == [] and len(true[0]) == 1
