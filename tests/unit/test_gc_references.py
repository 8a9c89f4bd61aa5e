"""What gc reads as references, and how it reads a grace period (no store)."""

from __future__ import annotations

import json

import pytest

from keel.errors import InvalidInput
from keel.meta.references import SOURCES, Source, _oids_in
from keel.services.gc import parse_grace

A, B = "a" * 64, "b" * 64


def test_each_form_of_source_yields_the_oids_it_holds() -> None:
    assert list(_oids_in(Source("t.oid", "t", "oid"), [A, None, B])) == [A, B]
    text = Source("model_versions.source", "model_versions", "source", form="text")
    assert list(_oids_in(text, [f"artifact:{A}/model.pkl", "runs:/abc/model", "f" * 65])) == [A]
    payload = Source("spans.outputs", "spans", "outputs", form="payload")
    rows = [json.dumps({"$object": B, "size": 9}), "not json", '{"$object": 3}', "[1]"]
    assert list(_oids_in(payload, rows)) == [B]


def test_payload_sources_only_read_rows_that_start_as_an_offloaded_payload() -> None:
    spans = next(s for s in SOURCES if s.name == "spans.inputs")
    expected = "SELECT inputs FROM spans WHERE inputs IS NOT NULL AND inputs LIKE '{\"$object\":%'"
    assert spans.select() == expected
    assert next(s for s in SOURCES if s.name == "artifacts.oid").select() == (
        "SELECT DISTINCT oid FROM artifacts WHERE oid IS NOT NULL"
    )


def test_every_source_names_a_distinct_column() -> None:
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names)) and all(s.name == f"{s.table}.{s.column}" for s in SOURCES)


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("2d", 172_800), ("0", 0), ("90", 90), (15, 15), ("1w", 604_800)]
)
def test_grace_periods(text: str | int, seconds: float) -> None:
    assert parse_grace(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "1y", "h", "99999999d"])
def test_bad_grace_periods_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_grace(text)
    assert "1h" in err.value.hint


def test_every_column_that_holds_an_object_id_is_a_source() -> None:
    """A new table that keeps object ids must be read by gc, or gc would delete live content:
    every ``*oid`` column (and ``config_snapshots.hash``) of the schema is a source."""
    from keel.meta import schema

    holding = {
        f"{table.name}.{column.name}"
        for table in schema.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("oid") or (table.name, column.name) == ("config_snapshots", "hash")
    }
    assert holding <= {s.name for s in SOURCES}, holding - {s.name for s in SOURCES}
