"""Allocation schemes through the store, on every backend: flags and experiments stored
before schemes were recorded keep their crc32 assignments exactly (through changes, a
replace, an import and a review too), new ones are stored with blake2b, and naming a
scheme moves one."""

import json

from bucketing_reference import UNITS, blake2b_reference, crc32_reference
from keel.meta.abtests import ABStore
from keel.meta.flags import FlagStore
from keel.sdk import ab, flags, reviews
from keel.sdk.session import get_session

OLD_FLAG_SET = {"flags": {"old": {"default": False, "enabled": True, "rollout": 25, "salt": "s"}}}
OLD_EXPERIMENT = {  # ExperimentRow.definition as keel wrote it before schemes were recorded
    "name": "old-exp",
    "hypothesis": "",
    "unit": "user_id",
    "variants": [{"name": "control", "weight": 0.3}, {"name": "treatment", "weight": 0.7}],
    "primary_metric": "thumbs_up",
    "higher_is_better": True,
    "guardrails": [],
    "targeting": {},
    "salt": "",
}


def _store_old_rows() -> None:
    db = get_session().flags.db
    with db.write() as conn:
        FlagStore.insert(conn, "production", 1, json.dumps(OLD_FLAG_SET), "old-keel", "stored before schemes")
        ABStore.create(conn, "old-exp", OLD_EXPERIMENT, "old-keel")


def _stored_definition(key: str, env: str = "production") -> dict:
    return flags.history(key, env)[-1].definition


def _on(key: str) -> list[bool]:
    client = flags.client(refresh_seconds=0)
    client.refresh()
    return [client.is_enabled(key, user_id=u) for u in UNITS]


def _want(reference, key: str, salt: str, pct: float) -> list[bool]:
    return [reference(key, salt, u) < pct * 100 for u in UNITS]


def test_old_flags_keep_crc32_through_every_change_and_new_ones_get_blake2b(ws):
    _store_old_rows()
    assert _on("old") == _want(crc32_reference, "old", "s", 25)  # stored without a scheme: exactly as before

    flags.rollout("old", 60, reason="ramp")
    assert _stored_definition("old")["bucketing"] == "crc32"  # recorded now, and unchanged
    assert _on("old") == _want(crc32_reference, "old", "s", 60)
    flags.set("old", {"rollout": 70, "salt": "s"}, replace=True, reason="rewrite")  # a replace keeps it too
    assert _on("old") == _want(crc32_reference, "old", "s", 70)
    flags.kill("old")
    flags.set("old", enabled=True)
    assert _on("old") == _want(crc32_reference, "old", "s", 70)

    new = flags.set("fresh", rollout=30, reason="new flag")
    assert new.flag.bucketing == "blake2b" and _stored_definition("fresh")["bucketing"] == "blake2b"
    assert _on("fresh") == _want(blake2b_reference, "fresh", "", 30)
    flags.rollout("fresh", 40)
    assert _on("fresh") == _want(blake2b_reference, "fresh", "", 40)

    moved = flags.set("old", bucketing="blake2b", reason="move to the independent scheme")
    assert moved.flag.scheme == "blake2b" and _stored_definition("old")["bucketing"] == "blake2b"
    assert _on("old") == _want(blake2b_reference, "old", "s", 70)


def test_a_file_flag_keeps_crc32_when_the_store_overrides_it(ws):
    (ws / "flags.yaml").write_text("flags:\n  in_file: {rollout: 20}\n")
    assert _on("in_file") == _want(crc32_reference, "in_file", "", 20)
    flags.rollout("in_file", 35)
    assert _stored_definition("in_file")["bucketing"] == "crc32"
    assert _on("in_file") == _want(crc32_reference, "in_file", "", 35)
    (ws / "flags.yaml").write_text("bucketing: blake2b\nflags:\n  in_file: {rollout: 20}\n  later: {rollout: 20}\n")
    assert _on("later") == _want(blake2b_reference, "later", "", 20)  # the file's default for its flags
    assert _on("in_file") == _want(crc32_reference, "in_file", "", 35)  # the stored definition wins


def test_a_reviewed_change_keeps_the_scheme(ws):
    _store_old_rows()
    flags.set("fresh", rollout=10)
    for key in ("old", "fresh"):
        reviews.protect("flag", key, "production", who="admin")
        change = reviews.request("flag", key, "production", json.dumps({"rollout": 50}), reason="ramp", who="alice")
        reviews.approve(change.id, who="bob")
    assert _stored_definition("old")["bucketing"] == "crc32"
    assert _on("old") == _want(crc32_reference, "old", "", 50)  # the reviewed definition has no salt
    assert _stored_definition("fresh")["bucketing"] == "blake2b"
    assert _on("fresh") == _want(blake2b_reference, "fresh", "", 50)


def test_old_experiments_keep_crc32_and_new_ones_get_blake2b(ws):
    _store_old_rows()
    ab.start("old-exp")
    got = [ab.assign("old-exp", user_id=u).variant for u in UNITS]
    assert got == ["control" if crc32_reference("old-exp", "", u) < 3000 else "treatment" for u in UNITS]

    exp = ab.create("new-exp", [{"name": "a"}, {"name": "b"}, {"name": "c"}])
    assert exp.bucketing == "blake2b"
    with get_session().flags.db.read() as conn:
        assert ABStore.get(conn, "new-exp").definition["bucketing"] == "blake2b"
    ab.start("new-exp")
    ab.refresh()
    got = [ab.assign("new-exp", user_id=u).variant for u in UNITS]
    want = []
    for u in UNITS:
        b = blake2b_reference("new-exp", "", u)
        want.append("a" if b < 3333 else "b" if b < 6667 else "c")
    assert got == want
