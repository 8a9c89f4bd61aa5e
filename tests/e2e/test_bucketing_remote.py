"""Allocation schemes through a real keel server (``KEEL_URI=http://...``) and the OpenFeature
provider: a flag set and an experiment stored before schemes were recorded are served by
crc32 exactly, new ones by blake2b, with the same buckets as the local evaluators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_live_changes_remote import Remote, _users
from test_server_api import start_server

from bucketing_reference import UNITS, blake2b_reference, crc32_reference
from keel.meta.abtests import ABStore
from keel.meta.flags import FlagStore
from keel.sdk import ab, flags
from keel.sdk import session as sessions
from keel.services.workspace import open_store

OLD_FLAG_SET = {"flags": {"old": {"default": False, "enabled": True, "rollout": 25}}}
OLD_EXPERIMENT = {
    "name": "old-exp",
    "unit": "user_id",
    "variants": [{"name": "control", "weight": 0.5}, {"name": "treatment", "weight": 0.5}],
    "primary_metric": "thumbs_up",
    "salt": "",
}


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    store, objects = f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "server-objects")
    tokens = _users(store, objects)
    opened = open_store(store, objects, cached=False)
    try:  # rows as keel wrote them before schemes were recorded
        with opened.db.write() as conn:
            FlagStore.insert(conn, "production", 1, json.dumps(OLD_FLAG_SET), "old-keel", "before schemes")
            ABStore.create(conn, "old-exp", OLD_EXPERIMENT, "old-keel")
    finally:
        opened.close()
    server = start_server(store, tmp_path, objects)
    found = Remote(server, tmp_path, store, objects, tokens)
    for key, value in found.env().items():
        if key.startswith("KEEL_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    try:
        yield found
    finally:
        sessions.reset()
        found.server.stop(kill=True)


def test_remote_flags_openfeature_and_experiments_use_the_recorded_scheme(remote: Remote) -> None:
    pytest.importorskip("openfeature")
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    assert flags.set("fresh", rollout=30).flag.bucketing == "blake2b"  # created through the server
    client = flags.client(refresh_seconds=0)
    assert client.flags["old"].scheme == "crc32" and client.flags["fresh"].scheme == "blake2b"
    want_old = [crc32_reference("old", "", u) < 2500 for u in UNITS]
    want_fresh = [blake2b_reference("fresh", "", u) < 3000 for u in UNITS]
    assert [client.is_enabled("old", user_id=u) for u in UNITS] == want_old
    assert [client.is_enabled("fresh", user_id=u) for u in UNITS] == want_fresh

    api.set_provider(flags.openfeature_provider(refresh_seconds=0))
    try:
        of = api.get_client()
        assert [of.get_boolean_value("old", False, EvaluationContext(str(u))) for u in UNITS] == want_old
        assert [of.get_boolean_value("fresh", False, EvaluationContext(str(u))) for u in UNITS] == want_fresh
    finally:
        api.clear_providers()

    assert ab.create("new-exp", [{"name": "a"}, {"name": "b"}]).bucketing == "blake2b"
    ab.start("old-exp")
    ab.start("new-exp")
    ab.refresh()
    old = [ab.assign("old-exp", user_id=u).variant for u in UNITS]
    assert old == ["control" if crc32_reference("old-exp", "", u) < 5000 else "treatment" for u in UNITS]
    new = [ab.assign("new-exp", user_id=u).variant for u in UNITS]
    assert new == ["a" if blake2b_reference("new-exp", "", u) < 5000 else "b" for u in UNITS]
