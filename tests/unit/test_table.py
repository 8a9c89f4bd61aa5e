"""Tables: build from lists or dicts, canonical bytes, filtering."""

import pytest

from keel.core.table import Table
from keel.errors import FilterSyntaxError, InvalidInput

ROWS = [["q1", "r1", 0.9, "good"], ["q2", "r2", 0.4, "bad"], ["q3", "r3", 0.8, "good"]]
COLUMNS = ["query", "response", "score", "feedback"]


def test_round_trip_through_bytes():
    table = Table.build(COLUMNS, ROWS)
    again = Table.from_bytes(table.to_bytes())
    assert again == table
    assert again.to_dicts()[0] == {"query": "q1", "response": "r1", "score": 0.9, "feedback": "good"}


def test_same_content_same_bytes():
    assert Table.build(COLUMNS, ROWS).to_bytes() == Table.build(COLUMNS, [list(r) for r in ROWS]).to_bytes()


def test_rows_as_dicts_infer_columns():
    table = Table.build(rows=[{"a": 1}, {"a": 2, "b": "x"}])
    assert table.columns == ("a", "b")
    assert table.rows == ((1, None), (2, "x"))


def test_filter():
    table = Table.build(COLUMNS, ROWS)
    assert table.filter("score >= 0.8 and feedback = 'good'").column("query") == ["q1", "q3"]
    assert len(table.filter("feedback != 'good'")) == 1


def test_errors():
    with pytest.raises(InvalidInput, match="row 1 has 2 values"):
        Table.build(["a", "b", "c"], [[1, 2, 3], [1, 2]])
    with pytest.raises(InvalidInput, match="unique"):
        Table.build(["a", "a"], [])
    with pytest.raises(InvalidInput, match="not JSON"):
        Table.build(["a"], [[object()]])
    with pytest.raises(InvalidInput, match="no column 'nope'"):
        Table.build(COLUMNS, ROWS).filter("nope > 1")
    with pytest.raises(FilterSyntaxError):
        Table.build(COLUMNS, ROWS).filter("score >")
