"""The trace store's fast paths give the same answers as the general ones, on every backend:
duplicate checks of known traces (span by span, or trace by trace past a few traces), span
conditions searched from their index when few spans match, planner statistics."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.core.traces import SpanBatch
from keel.meta import traces as meta_traces
from keel.services.traces import TraceService
from keel.services.workspace import open_store

BASE = 1_790_000_000_000_000_000  # ns


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> TraceService:
    store = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield TraceService(store)
    store.close()


def tid(i: int) -> str:
    return f"{i + 1:032x}"


def sid(trace: int, k: int) -> str:
    return f"{trace + 1:08x}{k + 1:08x}"


def span(trace: int, k: int, model: str | None = None, start: int = 0) -> dict:
    attributes = {"gen_ai.request.model": model} if model else {}
    if k == 0:
        attributes["keel.conversation_id"] = f"c-{trace}"
    return {
        "trace_id": tid(trace),
        "span_id": sid(trace, k),
        "parent_id": None if k == 0 else sid(trace, 0),
        "name": f"step {k}",
        "start_ns": BASE + (trace * 1000 + start) * 1_000_000,
        "end_ns": BASE + (trace * 1000 + start + 5) * 1_000_000,
        "status": "ok",
        "attributes": attributes,
    }


def write(service: TraceService, spans: list[dict]):
    return service.write_batch(SpanBatch(spans=[("app", s) for s in spans]))


@pytest.mark.parametrize("traces", [3, meta_traces._LOOKUP_TRACES + 5])
def test_known_traces_keep_their_spans_and_take_new_ones(service: TraceService, traces: int) -> None:
    first = write(service, [span(t, k) for t in range(traces) for k in range(2)])
    assert (first.stored, first.duplicates) == (2 * traces, 0)
    # each known trace gets one span again (ignored) and one new span (kept)
    again = write(service, [s for t in range(traces) for s in (span(t, 1), span(t, 2))])
    assert (again.stored, again.duplicates) == (traces, traces)
    assert {t.span_count for t in service.search("app", limit=500)} == {3}


def test_rare_and_common_span_conditions_find_the_same_traces(service: TraceService, monkeypatch) -> None:
    spans = [span(t, 0) for t in range(40)]
    spans += [span(t, 1, model="common", start=1) for t in range(40)]
    spans += [span(t, 2, model="rare", start=2) for t in (3, 17, 31)]
    write(service, spans)
    expected = {"common": [tid(t) for t in reversed(range(40))], "rare": [tid(31), tid(17), tid(3)]}
    for sparse in (0, 10**9):  # every condition searched per trace, or every one from the span index
        monkeypatch.setattr(meta_traces, "SPARSE_SPANS", sparse)
        for model, ids in expected.items():
            assert [t.trace_id for t in service.search("app", f"model = '{model}'", limit=100)] == ids
        found = service.search("app", "model in ('rare', 'nothing') and spans >= 3", "time asc", limit=2)
        assert [t.trace_id for t in found] == [tid(3), tid(17)]
        assert [t.trace_id for t in service.search("app", "not model = 'common'", limit=5)] == []


def test_the_trace_tables_get_planner_statistics_as_the_spans_grow(service: TraceService, monkeypatch) -> None:
    monkeypatch.setattr(meta_traces, "ANALYZE_FROM", 50)
    db = service.store.db

    def analyzed() -> set[str]:
        with db.raw_read() as cur:
            if not db.is_sqlite:  # PostgreSQL: what ANALYZE wrote (autovacuum never does the partitioned spans)
                cur.execute("SELECT DISTINCT tablename FROM pg_stats WHERE tablename IN ('traces', 'spans')")
                return {r[0] for r in cur.fetchall()}
            cur.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")
            if not cur.fetchone()[0]:
                return set()
            cur.execute("SELECT DISTINCT tbl FROM sqlite_stat1")
            return {r[0] for r in cur.fetchall()}

    write(service, [span(t, 0) for t in range(30)])
    assert not {"spans", "traces"} & analyzed()
    write(service, [span(t, 0) for t in range(30, 60)])
    assert {"spans", "traces"} <= analyzed()
    if not db.is_sqlite:
        return
    # a conversation filter now uses its own index (not a scan of the project's time index)
    query = service.query("app", "conversation_id = 'c-1'")
    with db.raw_read() as cur:
        cur.execute(
            f"EXPLAIN QUERY PLAN {meta_traces._TRACE_SELECT}{query.where()} ORDER BY t.start_ns DESC LIMIT 100",
            query.all_params(),
        )
        plan = " ".join(str(r[-1]) for r in cur.fetchall())
    assert "ix_traces_conversation" in plan, plan
