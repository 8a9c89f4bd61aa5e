"""Store-backed feature flags on every backend: versions, reflog, file overlay, refresh, exposures."""

import logging
import time

import pytest

import keel
from keel.errors import InvalidInput, NotFound
from keel.sdk import flags


def test_set_rollout_kill_history(ws):
    first = flags.set("new_prompt", rollout=10, reason="canary", who="alice")
    assert first.version == 1 and first.move.old is None and first.move.new == "1"
    grown = flags.rollout("new_prompt", "25%", reason="no regressions", who="bob")
    assert grown.version == 2 and grown.flag.rollout == 25
    flags.set("other", default=True)  # another flag's change is a new flag-set version too
    killed = flags.kill("new_prompt", reason="incident 42", who="carol")
    assert killed.version == 4 and not killed.flag.enabled

    history = flags.history("new_prompt")
    assert [(e.move.who, e.move.reason, e.move.old, e.move.new) for e in history] == [
        ("alice", "canary", None, "1"),
        ("bob", "no regressions", "1", "2"),
        ("carol", "incident 42", "2", "4"),
    ]
    assert [e.definition["rollout"] for e in history] == [10, 25, 25]
    assert history[-1].definition["enabled"] is False

    snap = flags.snapshot()
    assert snap.store_version == 4 and snap.version == "production@4"
    assert flags.get("new_prompt").enabled is False
    assert flags.snapshot("staging").flags == {}  # environments are separate

    with pytest.raises(InvalidInput, match="outside 0-100"):
        flags.rollout("new_prompt", 101)
    with pytest.raises(NotFound):
        flags.kill("missing")
    flags.set("multi", {"variants": {"a": 1, "b": 2}})
    with pytest.raises(InvalidInput, match="multivariate"):
        flags.rollout("multi", 50)
    moved = flags.delete("multi", reason="cleanup")
    assert moved.new is None
    assert "multi" not in flags.snapshot().flags


def test_flags_yaml_overlaid_by_the_store(ws):
    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: 100\n  both:\n    rollout: 0\n")
    snap = flags.snapshot()
    assert snap.sources == {"from_file": "file", "both": "file"}
    assert snap.version.startswith("production@0+")
    flags.rollout("both", 100, reason="override the file")
    snap = flags.snapshot()
    assert snap.sources["both"] == "store" and snap.flags["both"].rollout == 100
    client = flags.client(refresh_seconds=0)
    assert client.is_enabled("from_file", user_id="u1") and client.is_enabled("both", user_id="u1")

    (ws / "flags.yaml").write_text("flags:\n  from_file:\n    rollout: [\n")
    with pytest.raises(InvalidInput, match=r"flags.yaml:\d+: malformed YAML"):
        flags.snapshot()
    assert client.refresh() is False  # a broken file keeps the flags in force
    assert client.is_enabled("from_file", user_id="u1")


def test_prompt_payloads_must_exist(ws):
    keel.prompts.register("chat", "v1 {{q}}", version="1.0.0", changelog="first")
    with pytest.raises(InvalidInput, match=r"references prompt chat@2.0.0, which does not exist"):
        flags.set("prompt_flag", {"variants": {"old": "chat@1.0.0", "new": "chat@2.0.0"}})
    keel.prompts.register("chat", "v2 {{q}} (new)", version="2.0.0", changelog="new")
    change = flags.set("prompt_flag", {"variants": {"old": "chat@1.0.0", "new": "chat@2.0.0"}, "default": "old",
                                       "distribution": {"old": 50, "new": 50}})  # fmt: skip
    assert change.version == 1
    client = flags.client(refresh_seconds=0)
    payloads = {client.payload("prompt_flag", user_id=f"u{i}") for i in range(100)}
    assert payloads == {"chat@1.0.0", "chat@2.0.0"}


def test_client_refreshes_in_the_background(ws):
    flags.set("f", rollout=0)
    client = flags.client(refresh_seconds=0.05)
    assert not client.is_enabled("f", user_id="u1")
    flags.rollout("f", 100)
    deadline = time.monotonic() + 5
    while not client.is_enabled("f", user_id="u1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.is_enabled("f", user_id="u1")
    assert client.version == "production@2"
    client.close()


def test_evaluation_never_raises(ws, caplog):
    flags.set("f", rollout=50, rules=[{"if": {"v": {"semver_gte": "1.0.0"}}, "serve": True}])
    client = flags.client(refresh_seconds=0)
    flags._warned.clear()  # warnings are rate-limited per process
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert client.is_enabled("nope", default=True, user_id="u") is True
        assert client.variant("nope", default="x") == "x"
        assert client.payload("nope", default=3) == 3
        assert client.is_enabled("f", v=object(), user_id=["weird"]) in (True, False)
    assert "no flag 'nope'" in caplog.text
    # a broken evaluator serves the default and logs why
    client._enabled["f"] = lambda ctx: 1 / 0
    client._picks["f"] = lambda ctx: 1 / 0
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert client.is_enabled("f", default=True, user_id="u") is True
    assert "ZeroDivisionError" in caplog.text


def test_flags_without_a_user_id(ws, caplog):
    """The reference's ``flags.is_enabled("enable_reranker")``: a flag fully on needs no user id;
    a partial rollout without one serves the default and warns once per flag, naming the argument."""
    flags.set("enable_reranker", rollout=100)
    flags.set("use_new_prompt_v2", rollout=50)
    flags.set("reranker", variants={"off": None, "cohere": "rerank-v3"}, default="off", distribution={"cohere": 100})
    flags.set("tone", variants={"plain": 1, "warm": 2}, default="plain", distribution={"plain": 50, "warm": 50})
    client = flags.client(refresh_seconds=0)
    flags._unit_warned.clear()

    def unit_warnings():  # (other tests' clients may log about their stores meanwhile)
        return [r.getMessage() for r in caplog.records if "gave no" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="keel"):
        assert client.is_enabled("enable_reranker") is True
        assert client.payload("reranker") == "rerank-v3"
        assert unit_warnings() == []
        assert client.is_enabled("use_new_prompt_v2") is False
        assert client.is_enabled("use_new_prompt_v2") is False
        assert client.variant("tone") == "plain"
        assert client.variant("tone") == "plain"
    assert unit_warnings() == [
        "keel flags: flag 'use_new_prompt_v2' serves by user_id (a partial rollout) and this call gave no user_id, "
        "so it serves its default False; pass the unit: flags.is_enabled('use_new_prompt_v2', user_id=...) "
        "(this warning is shown once per flag)",
        "keel flags: flag 'tone' serves by user_id (a partial rollout) and this call gave no user_id, "
        "so it serves its default 'plain'; pass the unit: flags.variant('tone', user_id=...) "
        "(this warning is shown once per flag)",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert sum(client.is_enabled("use_new_prompt_v2", user_id=f"u{i}") for i in range(200)) > 0
        flags.rollout("use_new_prompt_v2", 100)
        client.refresh()
        assert client.is_enabled("use_new_prompt_v2") is True
    assert unit_warnings() == []


def test_exposures_on_the_active_run_and_conversations(ws):
    flags.set("f", rollout=100)
    client = flags.client(refresh_seconds=0, log_exposures=True)
    with keel.start_run(project="p") as run:
        for i in range(50):
            client.is_enabled("f", user_id=f"u{i}")
        meta = client.evaluate_all(user_id="u1")
    assert meta == {"f": "true"}
    record = keel.Client().get_run(run.id)
    assert record.params["flags.f"] == "production@1"
    edges = [e for e in keel.Client().lineage(run.id) if e.entity.kind == "flag"]
    assert [(e.entity.id, e.entity.version, e.role) for e in edges] == [("f", "production@1", "exposure")]
    assert client.explain("f", user_id="u1")["reason"] == "rollout"


@pytest.mark.timeout(30)
def test_regex_rules_are_linear_time_or_refused_when_stored(ws):
    """Any writer could store ``^(a+)+$`` and hang every client (9.7 s per call on 28 a's); with
    RE2 it answers at once, and what RE2 cannot run is refused at ``set`` and in flags.yaml."""
    flags.set("beta", {"rollout": 0, "rules": [{"if": {"name": {"regex": "^(a+)+$"}}, "serve": True}]})
    client = flags.client(refresh_seconds=0)
    started = time.perf_counter()
    assert client.is_enabled("beta", user_id="u", name="a" * 28 + "!") is False
    assert client.is_enabled("beta", user_id="u", name="a" * 28) is True
    assert time.perf_counter() - started < 1
    with pytest.raises(InvalidInput, match=r"flag 'beta' rule 1: invalid regex '\(a\)\\\\1' on 'name'"):
        flags.set("beta", {"rules": [{"if": {"name": {"regex": r"(a)\1"}}, "serve": True}]}, replace=True)
    assert client.is_enabled("beta", user_id="u", name="aa") is True  # the stored flag is unchanged
    rule = "      - if: {a: {regex: 'x(?!y)'}}\n        serve: true\n"
    (ws / "flags.yaml").write_text("flags:\n  other:\n    rules:\n" + rule)
    with pytest.raises(InvalidInput, match=r"flags\.yaml:2: flag 'other' rule 1: invalid regex"):
        flags.snapshot()
