"""Lineage records the alias a run resolved (``prompt:chat@production`` -> 1.3.0), so "the runs
that used ``production`` at the time" is a query that still answers, with the version each run
got, after the alias has moved; rows and spools from before the ref still deliver."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import keel
from keel.cli.main import app
from keel.core.batch import WriteBatch
from keel.core.entities import EntityRef, new_run_id, now_ms
from keel.core.times import format_at, parse_at
from keel.errors import InvalidInput
from keel.sdk.remote import wire_codec
from keel.sdk.session import get_session
from keel.sdk.spool import StreamSpool


def _use(prompt: str, ref: str) -> str:
    """A run that resolved ``chat@<ref>`` as the lead's ``keel.prompts.load`` will: the version
    the alias pointed at, recorded with the alias."""
    found = keel.prompts.get(f"{prompt}@{ref}")
    with keel.start_run(project="bot") as run:
        run.use(EntityRef("prompt", prompt, found.version), "prompt", ref=ref)
        run.use(EntityRef("prompt", prompt, found.version), "prompt", ref=ref)  # once per run
    return run.id


def test_the_runs_that_used_an_alias_keep_the_version_they_got_after_it_moves(ws: Path) -> None:
    keel.prompts.register("chat", "Hello {{ name }}", changelog="first")
    keel.prompts.register("chat", "Hi {{ name }}", changelog="shorter", bump="minor")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    first = _use("chat", "production")
    keel.prompts.set_alias("chat", "production", "1.1.0")
    second = _use("chat", "production")
    with keel.start_run(project="bot") as direct:
        with pytest.raises(InvalidInput, match="not an alias name"):  # refused before anything is queued
            direct.use(EntityRef("prompt", "chat", "1.0.0"), "prompt", ref="1.0")
        direct.log_input("prompt:chat@1.0.0", role="prompt")  # named the version: no ref

    used = [(e.run_id, e.entity.version, e.ref) for e in keel.lineage.runs_using("prompt:chat@production")]
    assert used == [(second, "1.1.0", "production"), (first, "1.0.0", "production")]
    cases = {  # selector -> (run, version) pairs, newest use first
        "prompt:chat@Production": [(second, "1.1.0"), (first, "1.0.0")],  # aliases ignore case
        "prompt:chat@1.0.0": [(direct.id, "1.0.0"), (first, "1.0.0")],  # the version, however reached
        "prompt:chat@staging": [],
        "prompt:chat": [(direct.id, "1.0.0"), (second, "1.1.0"), (first, "1.0.0")],
    }
    for selector, expected in cases.items():
        assert [(e.run_id, e.entity.version) for e in keel.lineage.runs_using(selector)] == expected, selector
    assert [e.run_id for e in keel.lineage.runs_using("prompt:chat", ref="")] == [direct.id]
    assert [e.run_id for e in keel.lineage.runs_using("prompt:chat", ref="production", version="1.0.0")] == [first]
    assert [(str(e.entity), e.ref) for e in keel.lineage.of(first)] == [("prompt:chat@1.0.0", "production")]
    assert set(keel.lineage.used_by("prompt:chat@1.0.0")) == {first, direct.id}  # unchanged: by version

    runner = CliRunner()
    shown = runner.invoke(app, ["runs", "lineage", first])
    assert shown.exit_code == 0, shown.output
    assert "1.0.0 (via production)" in shown.output
    listed = runner.invoke(app, ["runs", "list", "--used", "prompt:chat@production", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [(r["run_id"], r["used"]["entity"], r["used"]["ref"]) for r in json.loads(listed.output)["runs"]]
    assert rows == [(second, "prompt:chat@1.1.0", "production"), (first, "prompt:chat@1.0.0", "production")]
    table = runner.invoke(app, ["runs", "list", "--used", "prompt:chat@production"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and first[:8] in table.output and "1.0.0" in table.output, table.output
    refused = runner.invoke(app, ["runs", "list", "--used", "prompt:chat@production", "--sort", "name"])
    assert refused.exit_code != 0 and "--used" in str(refused.exception or refused.output)


def test_rows_and_spools_from_before_the_ref_are_stored_with_an_empty_ref(ws: Path) -> None:
    service = get_session().service
    old, spooled = new_run_id(), new_run_id()
    t = now_ms()
    service.write_batch(  # an older client's batch: 7-field lineage rows, beside a new 8-field one
        WriteBatch(
            new_runs=[(old, "bot", "old-client", t, None, "{}")],
            lineage=[(old, "input", "prompt", "chat", "1.0.0", "prompt", t)],
        )
    )
    service.write_batch(WriteBatch(lineage=[(old, "input", "model", "m", "3", "", t, "champion")]))
    assert [(str(e.entity), e.ref) for e in service.lineage(old)] == [
        ("prompt:chat@1.0.0", ""),
        ("model:m@3", "champion"),
    ]

    # A spool segment the previous version left (its process ended): the batch as it encoded it.
    previous = WriteBatch(
        new_runs=[(spooled, "bot", "spooled", t, None, "{}")],
        lineage=[(spooled, "input", "prompt", "chat", "1.0.0", "prompt", t)],
        run_ends=[(spooled, "finished", t + 1, None)],
    )
    payload = json.dumps({"v": 1, "id": "old-1", "at": t, "b": wire_codec().encode(previous)}).encode()
    folder = get_session().spool_dir / "runs"
    spool = StreamSpool(folder)
    spool.append([(1, "old-1", 3, t, payload)])
    spool.close()  # an orphan now, as a dead process leaves it
    report = keel.delivery.sync(timeout=10)
    assert report is not None
    edges = keel.lineage.of(spooled)
    assert [(str(e.entity), e.ref) for e in edges] == [("prompt:chat@1.0.0", "")]
    assert {e.run_id for e in keel.lineage.runs_using("prompt:chat", ref="")} == {old, spooled}


def test_the_time_of_each_use_prints_the_same_in_every_time_zone(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with keel.start_run(project="bot") as run:
        run.use(EntityRef("prompt", "chat", "1.0.0"), "prompt", ref="production")
    (edge,) = keel.lineage.runs_using("prompt:chat@production")
    printed = format_at(edge.created_at)
    assert printed.endswith("Z") and parse_at(printed) == edge.created_at  # copied into any --at: that instant
    for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
        with monkeypatch.context() as zone:
            zone.setenv("TZ", tz)  # the process's zone, as TZ=... keel would start with
            time.tzset()
            out = CliRunner().invoke(app, ["runs", "list", "--used", "prompt:chat@production"], env={"COLUMNS": "200"})
        time.tzset()
        assert out.exit_code == 0 and printed in out.output, (tz, out.output)
