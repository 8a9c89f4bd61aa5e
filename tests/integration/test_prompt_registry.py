"""The prompt registry through ``keel.prompts``, on SQLite and on PostgreSQL + S3."""

from __future__ import annotations

import time

import pytest

import keel
from keel.sdk import session as sessions

CHAT = [
    {"role": "system", "content": "You are a support agent for {{ company }}."},
    {"role": "user", "content": "{{ question }}"},
]


def _register(template="Answer briefly: {{ question }}", **kw):
    kw.setdefault("changelog", "change")
    kw.setdefault("model", "gpt-4")
    return keel.prompts.register("chat", template=template, **kw)


def test_register_load_render_and_identical_content(ws):
    first = _register(parameters={"temperature": 0.7}, changelog="First version")
    assert (first.name, first.version) == ("chat", "1.0.0")
    again = _register(parameters={"temperature": 0.7}, changelog="ignored: same content")
    assert again.version == "1.0.0" and again.content_hash == first.content_hash
    loaded = keel.prompts.load("chat@1.0.0")
    assert loaded.render(question="How do refunds work?") == "Answer briefly: How do refunds work?"
    assert loaded.parameters == {"temperature": 0.7} and loaded.variables == ("question",)
    info = keel.prompts.get("chat@1.0.0")
    assert info.changelog == "First version" and info.author


def test_chat_templates_render_message_lists(ws):
    keel.prompts.register("support", template=CHAT, changelog="chat prompt")
    p = keel.prompts.load("support")
    assert p.variables == ("company", "question")
    assert p.render(company="Acme", question="Hi?") == [
        {"role": "system", "content": "You are a support agent for Acme."},
        {"role": "user", "content": "Hi?"},
    ]
    with pytest.raises(keel.InvalidInput, match="company"):
        p.render(question="Hi?")
    with pytest.raises(keel.InvalidInput, match="extra"):
        p.render(company="Acme", question="Hi?", extra=1)


def test_the_bump_rule(ws):
    _register()
    assert _register("Answer very briefly: {{ question }}").version == "1.0.1"  # text only: patch
    assert _register("Answer very briefly: {{ question }}", model="gpt-4o").version == "1.1.0"  # model: minor
    with pytest.raises(keel.Conflict, match="needs a major bump"):
        _register("{{ context }} {{ question }}", model="gpt-4o", bump="minor")  # a variable added
    assert _register("{{ context }} {{ question }}", model="gpt-4o", bump="major").version == "2.0.0"
    with pytest.raises(keel.InvalidInput, match="does not increase"):
        _register("{{ context }} {{ question }}!", model="gpt-4o", version="1.9.0")
    with pytest.raises(keel.Conflict, match="needs a minor bump"):
        _register("{{ context }} {{ question }}!", model="gpt-4o-mini", version="2.0.1")
    assert _register("{{ context }} {{ question }}!", model="gpt-4o-mini", version="2.3.0").version == "2.3.0"
    assert [v.version for v in keel.prompts.versions("chat")] == ["2.3.0", "2.0.0", "1.1.0", "1.0.1", "1.0.0"]


def test_bad_input_registers_nothing(ws):
    with pytest.raises(keel.InvalidInput, match="changelog"):
        keel.prompts.register("chat", template="{{ q }}", changelog="")
    with pytest.raises(keel.InvalidInput, match="line 1"):
        keel.prompts.register("chat", template="Hello {{ name ", changelog="broken")
    with pytest.raises(keel.InvalidInput, match="bump"):
        keel.prompts.register("chat", template="{{ q }}", changelog="x", bump="huge")
    with pytest.raises(keel.NotFound, match="no prompt named 'chat'"):
        keel.prompts.load("chat")


def test_aliases_history_rollback_and_as_of(ws):
    _register(changelog="v1")
    _register("Be terse: {{ question }}", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.0.0", reason="first release")
    time.sleep(0.02)
    between = int(time.time() * 1000)
    time.sleep(0.02)
    keel.prompts.set_alias("chat", "production", "1.0.1", reason="+5% accuracy in run 4f2a")
    assert keel.prompts.load("chat@production").version == "1.0.1"
    assert keel.prompts.resolve("chat", "production", at=between) == "1.0.0"
    assert keel.prompts.resolve("chat", "production") == "1.0.1"
    move = keel.prompts.rollback("chat", "production")
    assert (move.old, move.new) == ("1.0.1", "1.0.0")
    assert keel.prompts.load("chat@production").version == "1.0.0"
    history = keel.prompts.history("chat", "production")
    assert [(m.old, m.new) for m in history] == [(None, "1.0.0"), ("1.0.0", "1.0.1"), ("1.0.1", "1.0.0")]
    assert history[1].reason == "+5% accuracy in run 4f2a" and history[1].who
    assert keel.prompts.get("chat@1.0.0").aliases == ("production",)
    keel.prompts.delete_alias("chat", "production", reason="retired")
    with pytest.raises(keel.NotFound, match="no alias 'production'"):
        keel.prompts.load("chat@production")
    assert keel.prompts.history("chat", "production")[-1].new is None


def test_get_takes_a_version_or_alias_in_second_place_and_a_time_as_at(ws):
    """``keel.prompts.get("calc", "1.2.0")`` is a version, as in ``load``; a time there still
    means ``at`` (its former second parameter)."""
    _register(changelog="v1")
    _register("Be terse: {{ question }}", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    time.sleep(0.02)
    between = int(time.time() * 1000)
    time.sleep(0.02)
    keel.prompts.set_alias("chat", "production", "1.0.1")

    assert keel.prompts.get("chat", "1.0.0").changelog == "v1"
    assert keel.prompts.get("chat", version="1.0.1").changelog == "v2"
    assert keel.prompts.get("chat", "production", ttl=0).version == "1.0.1"
    assert keel.prompts.get("chat", alias="production").version == "1.0.1"
    assert keel.prompts.get("chat@1.0.0", "1.0.0").version == "1.0.0"  # the same, twice
    # the time as the second argument, as before, and as at=
    assert keel.prompts.get("chat@production", between).version == "1.0.0"
    assert keel.prompts.get("chat@production", at=between).version == "1.0.0"
    assert keel.prompts.get("chat", alias="production", at=between).version == "1.0.0"

    with pytest.raises(keel.InvalidInput) as caught:
        keel.prompts.get("chat@production", "1.0.0")
    assert caught.value.message == "'chat@production' already names 'production', and version='1.0.0' names another"
    assert caught.value.hint == 'give it once: keel.prompts.get("chat", version="1.0.0")'
    # no alias + at: the latest version as of then (both were registered before ``between``)
    assert keel.prompts.get("chat", at=between).version == "1.0.1"
    assert keel.prompts.resolve("chat", "latest", at=between) == "1.0.1"
    with pytest.raises(keel.NotFound, match="no version of 'chat' existed at 2001-09-09T01:46:40.000Z"):
        keel.prompts.get("chat", at=1_000_000_000_000)
    with pytest.raises(keel.NotFound, match="no version 9.9.9"):
        keel.prompts.get("chat", "9.9.9")


def test_alias_errors(ws):
    _register()
    with pytest.raises(keel.NotFound, match="no version 9.9.9"):
        keel.prompts.set_alias("chat", "production", "9.9.9")
    with pytest.raises(keel.InvalidInput, match="implicit"):
        keel.prompts.set_alias("chat", "latest", "1.0.0")
    with pytest.raises(keel.InvalidInput, match="invalid alias"):
        keel.prompts.set_alias("chat", "bad alias!", "1.0.0")
    with pytest.raises(keel.Conflict, match="no earlier target"):
        keel.prompts.set_alias("chat", "staging", "1.0.0")
        keel.prompts.rollback("chat", "staging")


def test_diff(ws):
    _register(parameters={"temperature": 0.7})
    _register("Answer briefly and politely: {{ question }}", model="gpt-4o", parameters={"temperature": 0.2})
    d = keel.prompts.diff("chat", "1.0.0", "1.1.0")
    assert d.model == ("gpt-4", "gpt-4o")
    assert d.parameters_changed == {"temperature": (0.7, 0.2)}
    assert "-Answer briefly: {{ question }}" in d.template_diff
    assert "+Answer briefly and politely: {{ question }}" in d.template_diff
    assert d.required_bump == "minor"


def test_loading_in_a_run_records_the_served_version(ws):
    _register(changelog="v1")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    with keel.start_run(project="p") as run:
        for _ in range(3):
            keel.prompts.load("chat@production").render(question="q")
        keel.log_metric("accuracy", 0.9)
    assert keel.lineage.used_by("prompt:chat@1.0.0") == [run.id]
    edges = [e for e in keel.lineage.of(run.id) if e.entity.kind == "prompt"]
    assert len(edges) == 1 and edges[0].role == "prompt"


def test_alias_cache_ttl_and_pinned_versions(ws):
    _register(changelog="v1")
    _register("Be terse: {{ question }}", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.0.0")
    assert keel.prompts.load("chat@production", ttl=60).version == "1.0.0"
    # Another process moves the alias (the service directly: no cache upkeep here): ttl=0
    # reads the store now; the cache follows within 2 s (the change signal, not the ttl).
    sessions.get_session().prompts.set_alias("chat", "production", "1.0.1")
    assert keel.prompts.get("chat@production", ttl=0).version == "1.0.1"
    sessions.get_session().prompts.set_alias("chat", "production", "1.0.0")
    assert keel.prompts.load("chat@production", ttl=0).version == "1.0.0"
    sessions.get_session().prompts.set_alias("chat", "production", "1.0.1")
    deadline = time.monotonic() + 2
    while keel.prompts.load("chat@production", ttl=60).version != "1.0.1" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert keel.prompts.load("chat@production", ttl=60).version == "1.0.1"
    pinned = keel.prompts.load("chat@1.0.0")
    assert keel.prompts.load("chat@1.0.0") is pinned


def test_fallback_only_when_the_store_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_URI", "postgresql+psycopg://keel@127.0.0.1:1/nowhere")
    monkeypatch.setenv("KEEL_OBJECTS", "memory://")
    keel.prompts.clear_cache()
    try:
        served = keel.prompts.load("chat@production", fallback="Answer: {{ question }}")
        assert served.version == "fallback" and served.render(question="q") == "Answer: q"
        with pytest.raises(keel.StoreError):
            keel.prompts.load("chat@production")
    finally:
        sessions.reset()
