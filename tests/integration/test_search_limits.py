"""Search at the edge of its bounds, on a real store (SQLite file; PostgreSQL + S3 through ``ws``).

The largest query keel allows (10 sort keys, 20 distinct metric/param keys in
filter and sort together, each a join) runs and returns the right order; one
key more is refused before any SQL. The attacks that crashed or confused the
store (31 sort keys: SQLite 3.40 segfaulted; 2**63; lone surrogates; deep
nesting; huge page tokens) are refused with a KeelError, through the Python
API and the ``keel runs list`` command.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import keel
from keel.core.limits import MAX_QUERY_KEYS, MAX_SORT_KEYS

KEEL = Path(sys.executable).with_name("keel")
RUNS = 24
SORT_PARAMS = [f"k{i}" for i in range(5)]
SORT_METRICS = [f"s{i}" for i in range(5)]
FILTER_METRICS = [f"f{i}" for i in range(MAX_QUERY_KEYS - MAX_SORT_KEYS)]


@pytest.fixture
def runs(ws: Path) -> dict[str, dict[str, float]]:
    """``RUNS`` runs in project ``lim``: few distinct values per sort key (many ties, so
    every key decides some order), every filter metric present. Name -> values."""
    rng = random.Random(11)
    client = keel.Client()
    values: dict[str, dict[str, float]] = {}
    for i in range(RUNS):
        row = {key: float(rng.randint(0, 1)) for key in SORT_PARAMS + SORT_METRICS[:-1]}
        row[SORT_METRICS[-1]] = float(i)  # the last key breaks every remaining tie
        run = client.start_run(project="lim", name=f"r{i}")
        run.log_params({key: int(row[key]) for key in SORT_PARAMS})
        run.log_metrics({**{key: row[key] for key in SORT_METRICS}, **{key: i / 10 for key in FILTER_METRICS}})
        run.finish()
        values[f"r{i}"] = row
    return values


def _order(directions: list[bool]) -> list[str]:
    clauses = [f"params.{k}" for k in SORT_PARAMS] + [f"metrics.{k}" for k in SORT_METRICS]
    return [f"{c} {'asc' if up else 'desc'}" for c, up in zip(clauses, directions, strict=True)]


def test_ten_sort_keys_and_the_most_joins_return_the_right_order(runs):
    directions = [i % 2 == 0 for i in range(MAX_SORT_KEYS)]
    order_by = _order(directions)
    keys = SORT_PARAMS + SORT_METRICS
    # 10 filter metrics + 10 sort keys = the 20 distinct keys (joins) a search may use.
    text = " and ".join(f"metrics.{k} >= 0.2" for k in FILTER_METRICS)
    found = keel.search_runs("lim", filter=text, order_by=order_by)

    def key(name: str) -> tuple[float, ...]:
        return tuple(runs[name][k] if up else -runs[name][k] for k, up in zip(keys, directions, strict=True))

    expected = sorted((name for name in runs if int(name[1:]) >= 2), key=key)
    assert [r.name for r in found] == expected
    assert len(expected) == RUNS - 2
    # Pages of the same query follow the same order.
    first = keel.Client().search_runs("lim", filter=text, order_by=order_by, limit=7)
    second = keel.Client().search_runs("lim", filter=text, order_by=order_by, limit=7, page_token=first.next_page_token)
    assert [r.name for r in first + second] == expected[:14]


def test_an_eleventh_sort_key_or_a_21st_key_is_refused(runs):
    order_by = _order([True] * MAX_SORT_KEYS)
    with pytest.raises(keel.InvalidInput, match="11 sort keys given, at most 10"):
        keel.search_runs("lim", order_by=[*order_by, "metrics.f0"])
    text = " and ".join(f"metrics.{k} >= 0" for k in FILTER_METRICS) + " and params.other = 1"
    with pytest.raises(keel.InvalidInput, match="21 distinct metric, param or tag keys"):
        keel.search_runs("lim", filter=text, order_by=order_by)
    assert len(keel.search_runs("lim", order_by=order_by)) == RUNS  # the store still answers


def test_the_reported_attacks_are_refused_by_the_store(runs):
    client = keel.Client()
    with pytest.raises(keel.InvalidInput, match="31 sort keys"):
        client.search_runs("lim", order_by=[f"params.k{i}" for i in range(31)])
    attacks = {
        "(" * 329 + "metrics.f0 > 1" + ")" * 329: "levels deep",
        "not " * 900 + "metrics.f0 > 1": "levels deep",
        f"params.k0 = {2**63}": "64-bit",
        "params.k0 = '\ud800'": "lone surrogate",
        "start_time > true": "compare only with = or !=",
        " or ".join(f"params.k0 = {i}" for i in range(5000)): "characters long",
        "metrics.f0 > 0 and " + "x" * 100_000: "characters long",
    }
    for text, match in attacks.items():
        with pytest.raises(keel.FilterSyntaxError, match=match):
            client.search_runs("lim", filter=text)
    with pytest.raises(keel.InvalidInput, match="milliseconds"):
        client.search_runs("lim", filter="start_time > 'yesterday'")
    for token in (
        base64.urlsafe_b64encode(json.dumps({"offset": 2**70}).encode()).decode(),
        base64.urlsafe_b64encode(b'{"offset": 1e400}').decode(),
        base64.urlsafe_b64encode(b"[" * 150).decode(),
        "x" * 10_000,
    ):
        with pytest.raises(keel.InvalidInput, match="invalid page token"):
            client.search_runs("lim", page_token=token)
    for limit in (0, 50_001, 2**63):
        with pytest.raises(keel.InvalidInput, match="invalid limit"):
            client.search_runs("lim", limit=limit)
    assert len(client.search_runs("lim")) == RUNS


def test_keel_runs_list_refuses_31_sort_keys_with_a_one_line_error(runs, ws):
    sort = [arg for i in range(31) for arg in ("--sort", f"params.k{i}")]
    out = subprocess.run(
        [str(KEEL), "runs", "list", "-p", "lim", *sort], cwd=ws, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == keel.InvalidInput.exit_code, out.stderr  # not 139 (a crash)
    assert "31 sort keys given, at most 10" in out.stderr
    assert "Traceback" not in out.stderr
    ok = subprocess.run(
        [str(KEEL), "runs", "list", "-p", "lim", "--json", *sort[: 2 * MAX_SORT_KEYS]],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["runs"]) == RUNS


def test_conversation_searches_are_bounded_the_same_way(ws):
    from keel.sdk import conversations

    conversations.log(
        {
            "conversation_id": "c-1",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "model": "gpt-4",
            "timestamp": 1_790_000_000_000,
        }
    )
    conversations.flush()
    for text, match in {
        "(" * 329 + "latency_ms > 1" + ")" * 329: "levels deep",
        "not " * 900 + "model = 'x'": "levels deep",
        f"latency_ms > {2**63}": "64-bit",
        "model = '\ud800'": "lone surrogate",
        "timestamp > true": "compare only with = or !=",
        " or ".join(f"model = 'm{i}'" for i in range(5000)): "characters long",
    }.items():
        with pytest.raises(keel.FilterSyntaxError, match=match):
            conversations.search(text)
    for text in ("timestamp > 1e300", "timestamp > '" + "9" * 5000 + "'", "created_at < '99999999999999w'"):
        with pytest.raises(keel.InvalidInput, match="out of range"):
            conversations.search(text)
    with pytest.raises(keel.InvalidInput, match="out of range"):
        conversations.search(since="99999999999999w")
    with pytest.raises(keel.InvalidInput, match="invalid time"):
        conversations.search("tokens.total > 1 and timestamp = '\u00b3'")
    with pytest.raises(keel.InvalidInput, match="invalid limit"):
        conversations.search(limit=2**63)
    with pytest.raises(keel.InvalidInput, match="groups by 1-10"):
        conversations.stats(["model"] * 11)
    assert [c.conversation_id for c in conversations.search("model = 'gpt-4'")] == ["c-1"]
