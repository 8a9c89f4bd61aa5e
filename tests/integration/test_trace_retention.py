"""Trace retention on every backend: PostgreSQL's monthly span partitions, pruning by a cutoff."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keel.errors import InvalidInput, NotFound
from keel.meta.trace_partitions import month_range
from keel.services.traces import TraceService
from keel.services.workspace import open_store

DAY = 86_400 * 1_000_000_000
NOW = time.time_ns()


def span(trace: str, span_id: str, start: int, parent: str | None = None) -> dict:
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_id": parent,
        "name": "s",
        "start_ns": start,
        "end_ns": start + 1,
    }


@pytest.fixture
def service(database_url: str, tmp_path: Path):
    store = open_store(database_url, str(tmp_path / "objects"), cached=False)
    yield TraceService(store)
    store.close()


def test_month_range() -> None:
    name, first, end = month_range(1_767_225_600 * 1_000_000_000 - 1)  # 2025-12-31T23:59:59.999
    assert name == "spans_p202512" and end == 1_767_225_600 * 1_000_000_000
    assert month_range(end)[0] == "spans_p202601" and month_range(end)[1] == end
    assert first < end


def test_prune_removes_old_traces_and_keeps_new_ones(service: TraceService) -> None:
    old, ancient, new = "1" * 32, "2" * 32, "3" * 32
    service.ingest(
        [
            span(old, "a" * 16, NOW - 90 * DAY),
            span(old, "b" * 16, NOW - 90 * DAY + 5, "a" * 16),
            span(ancient, "c" * 16, 1_000_000_000),  # 1970: outside the partition window
            span(new, "d" * 16, NOW - DAY),
        ],
        "app",
    )
    parts = service.raw.partitions.partitions()
    if service.store.db.is_sqlite:
        assert parts == []
    else:  # a partition per month seen, none for 1970 (the default partition holds it)
        assert {month_range(NOW - 90 * DAY)[0], month_range(NOW - DAY)[0]} <= {name for name, _ in parts}
        assert month_range(1_000_000_000)[0] not in {name for name, _ in parts}

    report = service.prune("30d")
    if service.store.db.is_sqlite:
        assert report == {"partitions": 0, "spans": 3, "traces": 2}
    else:  # the old month goes as a whole (its 2 spans with it); 1970's span is deleted from the default one
        assert report == {"partitions": 1, "spans": 1, "traces": 2}
    assert [t.trace_id for t in service.search("app")] == [new]
    with pytest.raises(NotFound):
        service.get(old, "app")
    assert service.get(new, "app").trace.span_count == 1
    assert service.prune("30d") == {"partitions": 0, "spans": 0, "traces": 0}  # nothing left to do
    # spans of a new batch in a month whose partition was dropped get it back
    service.ingest([span("4" * 32, "e" * 16, NOW - 90 * DAY + 10)], "app")
    assert service.count("app") == 2


def test_prune_needs_a_cutoff(service: TraceService) -> None:
    with pytest.raises(InvalidInput):
        service.prune("")
    with pytest.raises(InvalidInput):
        service.prune("soon")


def test_server_sweep_applies_trace_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from keel.cli.main import main

    url = f"sqlite:///{tmp_path / 'server.db'}"
    store = open_store(url, str(tmp_path / "objects"), cached=False)
    try:
        TraceService(store).ingest([span("1" * 32, "a" * 16, NOW - 60 * DAY), span("2" * 32, "b" * 16, NOW)], "app")
    finally:
        store.close()
    args = ["server", "sweep", "--store", url, "--objects", str(tmp_path / "objects"), "--tmp-dir", str(tmp_path)]
    assert main([*args, "--traces-older-than", "30d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["traces_pruned"] == {"partitions": 0, "spans": 1, "traces": 1}
    assert main([*args, "--traces-older-than", "whenever"]) != 0
    assert "invalid time" in capsys.readouterr().err
