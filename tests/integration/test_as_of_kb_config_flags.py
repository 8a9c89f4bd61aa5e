""" "As of T" for knowledge bases, configs and flags through the Python API, on every backend:
one time parser (keel.core.times.parse_at) for every ``at=``, the newest version, snapshot or
flag set recorded at or before T, and a refusal naming the time when nothing existed yet."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.core.entities import now_ms
from keel.core.times import format_at
from keel.errors import InvalidInput, NotFound
from keel.sdk import config as keel_config
from keel.sdk import flags
from keel.sdk import kb as kbs


def _after(ms: int) -> None:
    """Return once the clock is past ``ms``: the next write gets a later millisecond."""
    while now_ms() <= ms:
        pass


def _spellings(ms: int) -> dict[str, Any]:
    """One instant written every way ``at=`` reads it."""
    return {
        "datetime (UTC)": datetime.fromtimestamp(ms / 1000, tz=UTC),
        "datetime (naive = local)": datetime.fromtimestamp(ms / 1000),
        "printed (format_at)": format_at(ms),
        "offset +09:00": datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(_tokyo()).isoformat(),
        "epoch ms (int)": ms,
        "epoch ms (text)": f"{ms}ms",
        "epoch s (text)": f"{ms / 1000:.3f}s",
    }


def _tokyo() -> Any:
    from datetime import timedelta, timezone

    return timezone(timedelta(hours=9))


REFUSED = [
    (1_733_500_000.0, "looks like epoch seconds"),  # time.time(): seconds read as ms would be 1970
    ("1733500000", "no unit"),
    ("2026-12-07T10:00:00", "no time zone"),
    ("yesterday", "not a time"),
]


# -- knowledge bases ------------------------------------------------------------------------
def test_kb_as_of(ws: Path) -> None:
    kb = kbs.create("docs", chunk_size=200, chunk_overlap=0)
    kb.add_documents([{"text": "Refunds take 5 days.", "source": "refunds.md"}])
    v1 = kb.commit("one")
    _after(v1.created_at)
    kb.add_documents([{"text": "Refunds take 10 days. Shipping is free.", "source": "refunds.md"}])
    v2 = kb.commit("two")

    # every spelling of a commit's time names that commit's version
    for version in (v1, v2):
        for label, when in _spellings(version.created_at).items():
            assert kb.version(at=when).version == version.version, label

    # search(at=) searches the version that was newest then
    rows = [  # (at, the version whose hits it must return)
        (format_at(v1.created_at), "v1"),
        (format_at(v2.created_at - 1), "v1"),
        (format_at(v2.created_at), "v2"),
        (datetime(9999, 1, 1, tzinfo=UTC), "v2"),
    ]
    for at, version in rows:
        expected = kb.version(version).search("how long do refunds take?", top_k=1)
        assert kb.search("how long do refunds take?", top_k=1, at=at) == expected, at
        assert kbs.search("docs", "how long do refunds take?", top_k=1, at=at) == expected, at
    assert "10 days" in kb.search("refunds", top_k=1, at=v2.created_at)[0].text
    assert "5 days" in kb.search("refunds", top_k=1, at=v1.created_at)[0].text

    # refusals: before the first commit (naming the time), a version and a time, unreadable times
    before = v1.created_at - 1
    with pytest.raises(NotFound) as caught:
        kb.version(at=before)
    assert f"existed at {format_at(before)}" in caught.value.message
    assert format_at(v1.created_at) in caught.value.hint  # when the first version came
    with pytest.raises(NotFound, match="existed at"):
        kb.search("refunds", at=before)
    with pytest.raises(InvalidInput, match="not both"):
        kb.version("v1", at=v1.created_at)
    for value, message in REFUSED:
        with pytest.raises(InvalidInput, match=message):
            kb.version(at=value)
    with pytest.raises(NotFound, match="no knowledge base"):
        kbs.KnowledgeBase("missing").version(at=v1.created_at)


# -- configs ------------------------------------------------------------------------------------
def _write(folder: Path, model: str) -> None:
    (folder / "config").mkdir(exist_ok=True)
    (folder / "config" / "production.yaml").write_text(f"llm:\n  model: {model}\n  api_key: !secret sk-abc\n")


def test_config_as_of(ws: Path) -> None:
    _write(ws, "a")
    a = keel_config.load("production").save()
    _after(a.created_at)
    _write(ws, "b")
    b = keel_config.load("production").save()
    _after(b.created_at)
    _write(ws, "a")  # changed back: the snapshot exists, so only a run's use says it is back
    with keel.start_run(project="p") as run:
        keel_config.load("production")
    run_ms = keel.Client().get_run(run.id).end_time or now_ms()
    rows = [  # (at, expected model)
        (format_at(a.created_at), "a"),
        (datetime.fromtimestamp(a.created_at / 1000, tz=UTC), "a"),
        (f"{b.created_at - 1}ms", "a"),
        (format_at(b.created_at), "b"),
        (run_ms, "a"),
        ("9999-01-01T00:00:00Z", "a"),
    ]
    for at, model in rows:
        snap, content = keel_config.snapshot(env="production", at=at)
        assert (content["llm"]["model"], content["llm"]["api_key"]) == (model, "***"), at
        assert snap.env == "production"
    with pytest.raises(NotFound) as caught:
        keel_config.snapshot(env="production", at=a.created_at - 1)
    assert format_at(a.created_at - 1) in caught.value.message and format_at(a.created_at) in caught.value.hint
    with pytest.raises(NotFound, match="'staging'"):
        keel_config.snapshot(env="staging", at=b.created_at)
    for value, message in REFUSED:
        with pytest.raises(InvalidInput, match=message):
            keel_config.snapshot(env="production", at=value)
    with pytest.raises(InvalidInput, match="env="):
        keel_config.snapshot(a.hash, at=b.created_at)


# -- flags --------------------------------------------------------------------------------------
def test_flags_as_of(ws: Path) -> None:
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: 100\n")
    one = flags.set("f", rollout=10, reason="canary")
    _after(one.move.at)
    two = flags.rollout("f", 50)
    _after(two.move.at)
    three = flags.kill("f")
    rows = [  # (at, stored version, the flag's state then: (enabled, rollout) or None)
        (one.move.at - 1, 0, None),
        (format_at(one.move.at), 1, (True, 10)),
        (datetime.fromtimestamp(two.move.at / 1000, tz=UTC), 2, (True, 50)),
        (f"{three.move.at}ms", 3, (False, 50)),
    ]
    for at, version, state in rows:
        snap = flags.snapshot(at=at)
        assert snap.store_version == version, at
        assert snap.sources["from_file"] == "file"  # flags.yaml as it is now
        assert flags.get("from_file", at=at).rollout == 100
        found = snap.flags.get("f")
        assert (None if found is None else (found.enabled, found.rollout)) == state, at
        assert [f.key for f in flags.list_flags(at=at)] == sorted(snap.flags)
        service = keel.sdk.session.get_session().flags
        assert service.stored("production", at=at)[0] == version
    with pytest.raises(NotFound) as caught:
        flags.get("f", at=one.move.at - 1)
    assert format_at(one.move.at - 1) in caught.value.message
    with pytest.raises(InvalidInput, match="not both"):
        keel.sdk.session.get_session().flags.stored("production", version=1, at=one.move.at)
    for value, message in REFUSED:
        with pytest.raises(InvalidInput, match=message):
            flags.snapshot(at=value)
    assert flags.get("f").enabled is False  # without at=: now
