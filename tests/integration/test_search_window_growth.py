"""The windowed run search (TrackingStore.search) when its first window is too small or its
edge is not a finite number: the answer is always the full query's, on both databases."""

from __future__ import annotations

import math
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


@pytest.fixture(scope="module")
def store(module_database_url: str) -> Iterator[TrackingStore]:
    """300 runs; 1 in 30 has group = 'rare'; the 3 best scores are +inf, the 3 worst -inf."""
    db = open_database(module_database_url)
    ensure_schema(db)
    tracking = TrackingStore(db)
    batch = WriteBatch()
    for i in range(300):
        run_id = new_run_id()
        batch.new_runs.append((run_id, "p", f"r{i}", 1_000 + i, None, "{}"))
        group = "rare" if i % 30 == 0 else "common"
        batch.params.append((run_id, "group", *encode_param("group", group), False))
        score = math.inf if i < 3 else -math.inf if i >= 297 else (i * 37 % 101) / 100
        batch.metrics.append((run_id, "score", score, 0, 1))
    tracking.write_batch(batch)
    yield tracking
    db.close()


def _names(store: TrackingStore, filter_text: str, order: str, limit: int, offset: int = 0) -> list[str]:
    node = parse_filter(filter_text) if filter_text else None
    records, _more = store.search(None, node, parse_order_by([order]), limit, offset)
    return [r.name for r in records]


@pytest.mark.parametrize("order", ["metrics.score desc", "metrics.score asc"])
@pytest.mark.parametrize("filter_text", ["", "params.group = 'rare'", "params.group = 'none'"])
@pytest.mark.parametrize(("limit", "offset"), [(5, 0), (4, 6), (50, 0)])
def test_growing_windows_give_the_full_answer(store, monkeypatch, order, filter_text, limit, offset):
    expected = _names(store, filter_text, order, limit, offset)  # 300 runs: no window (first window 1,000)
    monkeypatch.setattr(tracking_module, "_SEARCH_WINDOW", 3)
    monkeypatch.setattr(tracking_module, "_WINDOW_FACTOR", 1)
    assert _names(store, filter_text, order, limit, offset) == expected


def test_infinite_values_at_the_edge_fall_back_to_the_full_query(store, monkeypatch):
    # A window of 2 or 3 runs has +inf (desc) or -inf (asc) at its edge: no literal bound exists.
    expected = _names(store, "", "metrics.score desc", 5), _names(store, "", "metrics.score asc", 5)
    monkeypatch.setattr(tracking_module, "_SEARCH_WINDOW", 2)
    monkeypatch.setattr(tracking_module, "_WINDOW_FACTOR", 1)
    assert (_names(store, "", "metrics.score desc", 5), _names(store, "", "metrics.score asc", 5)) == expected
    assert expected[0][:3] == ["r2", "r1", "r0"]  # ties (+inf) newest first
