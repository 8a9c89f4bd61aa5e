"""Conversation logging on every backend: log, late feedback, queries, stats, export,
the never-raise path, surviving the app's exit, redaction."""

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import keel
from keel.errors import FilterSyntaxError, InvalidInput, NotFound
from keel.sdk import conversations


@pytest.fixture(autouse=True)
def _fresh_state():
    conversations.set_redactor(None)
    conversations._redactor = conversations._UNSET  # back to the workspace's setting
    conversations.reset_counters()
    yield
    conversations._redactor = conversations._UNSET
    conversations.reset_counters()


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def log_sample() -> None:
    """Six conversations over two prompt versions and two models, at fixed times."""
    base = 1_790_000_000_000
    rows = [
        ("c-1", "bot@1.0.0", "gpt-4", 100, "up", {"env": "prod", "user_id": "u1", "turns": 1}),
        ("c-2", "bot@1.0.0", "gpt-4", 300, "down", {"env": "prod", "user_id": "u2", "turns": 3}),
        ("c-3", "bot@1.0.0", "gpt-4o-mini", 200, None, {"env": "dev", "user_id": "u1", "turns": 2}),
        ("c-4", "bot@1.1.0", "gpt-4", 400, "up", {"env": "prod", "user_id": "u3", "beta": True}),
        ("c-5", "bot@1.1.0", "gpt-4", 500, "up", {"env": "prod", "user_id": "u4", "beta": False}),
        ("c-6", "bot@1.1.0", "custom-llm", 1000, None, {"env": "prod", "user_id": "u5", "turns": "many"}),
    ]
    for i, (cid, prompt, model, latency, thumb, metadata) in enumerate(rows):
        returned = conversations.log(
            {
                "conversation_id": cid,
                "messages": chat(f"question {i}", f"answer {i}"),
                "model": model,
                "prompt_version": prompt,
                "user_feedback": thumb,
                "tokens_used": {"prompt": 1000 * (i + 1), "completion": 100},
                "latency_ms": latency,
                "timestamp": base + i * 60_000,
                "metadata": metadata,
            }
        )
        assert returned == cid


def ids(records) -> list[str]:
    return [r.conversation_id for r in records]


def test_log_feedback_and_query(ws: Path) -> None:
    log_sample()
    assert conversations.feedback("c-3", thumb="down", comment="wrong answer") is True
    assert conversations.feedback("c-1", score=4.5) is True
    conversations.flush()

    assert ids(conversations.search()) == ["c-6", "c-5", "c-4", "c-3", "c-2", "c-1"]
    assert ids(conversations.search(limit=2)) == ["c-6", "c-5"]
    assert ids(conversations.search("feedback.thumb = 'down'")) == ["c-3", "c-2"]
    assert ids(conversations.search("feedback.thumb = 'down' and model = 'gpt-4'")) == ["c-2"]
    assert ids(conversations.search("feedback.thumb is null")) == ["c-6"]
    assert ids(conversations.search("feedback.score >= 4")) == ["c-1"]
    assert ids(conversations.search("feedback.comment like '%wrong%'")) == ["c-3"]
    assert ids(conversations.search("prompt_version = 'bot@1.1.0' and latency_ms > 450")) == ["c-6", "c-5"]
    assert ids(conversations.search("model in ('gpt-4o-mini', 'custom-llm')")) == ["c-6", "c-3"]
    assert ids(conversations.search("prompt_version like 'bot@1.0.%' and not model = 'gpt-4'")) == ["c-3"]
    assert ids(conversations.search("tokens.prompt > 4500")) == ["c-6", "c-5"]
    assert ids(conversations.search("tokens.total = 2100")) == ["c-2"]
    # metadata: text, numbers (a string "many" is not a number), booleans, absent keys, nesting-free keys
    assert ids(conversations.search("metadata.env = 'dev'")) == ["c-3"]
    assert ids(conversations.search("metadata.user_id = 'u1'")) == ["c-3", "c-1"]
    assert ids(conversations.search("metadata.turns >= 2")) == ["c-3", "c-2"]
    assert ids(conversations.search("metadata.turns = 'many'")) == ["c-6"]
    assert ids(conversations.search("metadata.beta = true")) == ["c-4"]
    assert ids(conversations.search("metadata.beta is not null")) == ["c-5", "c-4"]
    assert ids(conversations.search("metadata.user_id ilike 'U_'")) == ["c-6", "c-5", "c-4", "c-3", "c-2", "c-1"]
    # time range: since inclusive, until exclusive
    base = 1_790_000_000_000
    assert ids(conversations.search(since=base + 60_000, until=base + 180_000)) == ["c-3", "c-2"]
    assert conversations.count("metadata.env = 'prod'") == 5

    late = conversations.get("c-3")
    assert [r.thumb for r in late.records] == ["down"] and late.latest.comment == "wrong answer"
    assert [(e.thumb, e.comment) for e in late.feedback] == [("down", "wrong answer")]
    first = conversations.get("c-1").latest
    assert (first.thumb, first.score) == ("up", 4.5)  # the score was added, the thumb kept
    assert first.messages == chat("question 0", "answer 0") and first.metadata["user_id"] == "u1"
    assert first.tokens_used == {"prompt": 1000, "completion": 100, "total": 1100} and first.latency_ms == 100.0

    with pytest.raises(NotFound):
        conversations.get("nope")
    with pytest.raises(FilterSyntaxError):
        conversations.search("model = ")
    with pytest.raises(InvalidInput, match="unknown conversation field"):
        conversations.search("colour = 'red'")


def test_stats_per_prompt_version_model_and_metadata(ws: Path) -> None:
    log_sample()
    by_prompt = {s.group["prompt_version"]: s for s in conversations.stats()}
    old, new = by_prompt["bot@1.0.0"], by_prompt["bot@1.1.0"]
    assert (old.count, old.thumbs_up, old.thumbs_down, old.thumbs_up_rate) == (3, 1, 1, 0.5)
    assert (new.count, new.thumbs_up_rate) == (3, 1.0)
    assert old.latency_p50 == 200.0 and old.latency_p95 == pytest.approx(290.0)  # 100, 200, 300
    assert new.latency_p50 == 500.0 and new.latency_p95 == pytest.approx(950.0)  # 400, 500, 1000
    assert (old.prompt_tokens, old.completion_tokens) == (6000, 300)
    gpt4, mini = (30.0, 60.0), (0.15, 0.6)
    expected_old = ((1000 + 2000) * gpt4[0] + 200 * gpt4[1] + 3000 * mini[0] + 100 * mini[1]) / 1e6
    assert old.cost == pytest.approx(expected_old)
    assert new.unpriced_models == ["custom-llm"]
    priced = {s.group["prompt_version"]: s for s in conversations.stats(prices={"custom-llm": (1.0, 2.0)})}
    assert priced["bot@1.1.0"].cost == pytest.approx(new.cost + (6000 * 1.0 + 100 * 2.0) / 1e6)

    by_model = {s.group["model"]: s.count for s in conversations.stats(by="model")}
    assert by_model == {"gpt-4": 4, "gpt-4o-mini": 1, "custom-llm": 1}
    by_env = {s.group["metadata.env"]: s.count for s in conversations.stats(by="metadata.env")}
    assert by_env == {"prod": 5, "dev": 1}
    both = {tuple(s.group.values()): s.count for s in conversations.stats(by=["prompt_version", "model"])}
    assert both[("bot@1.0.0", "gpt-4")] == 2 and len(both) == 4
    only_prod = conversations.stats(filter="metadata.env = 'prod'", by="prompt_version")
    assert sorted((tuple(s.group.values()), s.count) for s in only_prod) == [(("bot@1.0.0",), 2), (("bot@1.1.0",), 3)]
    days = conversations.stats(by="day")
    assert len(days) == 1 and len(days[0].group["day"]) == 10
    with pytest.raises(InvalidInput):
        conversations.stats(by="colour")


def test_export_makes_an_eval_dataset(ws: Path) -> None:
    log_sample()
    conversations.log(conversation_id="c-2", messages=chat("question 1", "better answer"), model="gpt-4")
    conversations.feedback("c-2", thumb="down")
    written = conversations.export(ws / "dataset.jsonl", filter="feedback.thumb = 'down'")
    lines = [json.loads(line) for line in (ws / "dataset.jsonl").read_text().splitlines()]
    assert written == len(lines) == 1  # one line per conversation: the newest matching record
    line = lines[0]
    assert line["conversation_id"] == "c-2"
    assert line["input"] == [{"role": "user", "content": "question 1"}]
    assert line["output"] == "better answer"
    assert line["feedback"] == {"thumb": "down", "score": None, "comment": None}
    assert line["metadata"]["model"] == "gpt-4"
    everything = conversations.export(ws / "all.jsonl", all_records=True)
    assert everything == 7
    assert conversations.export(ws / "two.jsonl", limit=2) == 2
    with pytest.raises(NotFound):
        conversations.export(ws / "missing" / "x.jsonl")


def test_feedback_before_its_conversation_is_applied_when_it_arrives(ws: Path) -> None:
    conversations.feedback("early", thumb="down", comment="slow")
    conversations.flush()
    conversations.log({"conversation_id": "early", "messages": chat("q", "a")})
    conversations.log({"conversation_id": "other", "messages": chat("q", "a")})
    conversations.flush()
    record = conversations.get("early").latest
    assert (record.thumb, record.comment) == ("down", "slow")
    assert conversations.get("other").latest.thumb is None


def test_tokens_used_as_a_plain_total_is_stored_queried_and_counted(ws: Path) -> None:
    """The reference's ``"tokens_used": conversation.token_usage`` is often one number: it is kept
    as the record's total (no prompt/completion split), filtered on and summed, never dropped."""
    base = 1_790_000_000_000
    logged = conversations.log(
        conversation_id="total-only", messages=chat("q", "a"), model="gpt-4", tokens_used=120, timestamp=base
    )
    assert logged == "total-only"
    conversations.log(
        conversation_id="split", messages=chat("q", "a"), model="gpt-4", timestamp=base + 1,
        tokens_used={"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
    )  # fmt: skip
    conversations.log(conversation_id="none", messages=chat("q", "a"), model="gpt-4", timestamp=base + 2)
    conversations.flush()
    assert conversations.counters()["invalid"] == 0 and conversations.count() == 3

    record = conversations.get("total-only").latest
    assert record.tokens_used == {"prompt": None, "completion": None, "total": 120}
    assert conversations.get("split").latest.tokens_used == {"prompt": 1000, "completion": 100, "total": 1100}
    assert conversations.get("none").latest.tokens_used == {"prompt": None, "completion": None, "total": None}
    assert ids(conversations.search("tokens.total = 120")) == ["total-only"]
    assert ids(conversations.search("tokens.total > 100")) == ["split", "total-only"]
    assert ids(conversations.search("tokens.prompt is null and tokens.total > 0")) == ["total-only"]

    (stats,) = conversations.stats(by="model")
    assert (stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (1000, 100, 1220)
    assert stats.unsplit_tokens == 120  # a total cannot be priced: the cost is the split record's only
    assert stats.cost == pytest.approx((1000 * 30.0 + 100 * 60.0) / 1e6)
    assert stats.to_dict()["total_tokens"] == 1220


def test_rows_from_a_keel_before_totals_are_written(ws: Path) -> None:
    """A batch spooled (or sent to a server) by an older keel has 14 values per row, no total:
    it is written, and its total is the sum of its counts."""
    from keel.core.conversations import ConversationBatch, normalize_record, to_row
    from keel.sdk.session import get_session

    record = normalize_record({"conversation_id": "old", "messages": chat("q", "a"), "tokens_used": {"prompt": 5}})
    old_row = to_row(record, 1)[:14]
    get_session().conversations.write_batch(ConversationBatch([old_row]))
    assert conversations.get("old").latest.tokens_used == {"prompt": 5, "completion": None, "total": 5}


def test_bad_records_are_counted_and_the_app_continues(ws: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="keel"):
        assert conversations.log({"messages": "not a list"}) is None
        assert conversations.log({"messages": [], "latency_ms": "fast"}) is None
        assert conversations.log({"messages": [], "colour": "red"}) is None
        assert conversations.log(None) is None
        assert conversations.log(["not", "a", "dict"]) is None  # type: ignore[arg-type]
        assert conversations.feedback("c", thumb="sideways") is False
        assert conversations.feedback("", thumb="up") is False
        good = conversations.log(messages=chat("q", "a"))
    assert good is not None
    conversations.flush()
    counts = conversations.counters()
    assert counts["invalid"] == 7 and counts["written"] == 1 and counts["pending"] == 0 and counts["failed"] == 0
    assert "latency_ms must be a number" in caplog.text
    assert "(pass latency_ms as a number)" in caplog.text  # the hint names the field too
    assert conversations.count() == 1


def test_strict_mode_and_validate_raise(ws: Path) -> None:
    with pytest.raises(InvalidInput, match="latency_ms"):
        conversations.log({"messages": [], "latency_ms": "fast"}, strict=True)
    with pytest.raises(InvalidInput, match="thumb"):
        conversations.feedback("c", thumb="sideways", strict=True)
    record = conversations.validate({"messages": chat("q", "a"), "user_feedback": {"thumb": "up"}})
    assert record["user_feedback"]["thumb"] == 1
    with pytest.raises(InvalidInput, match="unknown key"):
        conversations.validate(messages=[], colour="red")
    assert conversations.counters()["invalid"] == 0


def test_records_carry_the_active_run(ws: Path) -> None:
    with keel.start_run(project="chat") as run:
        conversations.log(conversation_id="in-run", messages=chat("q", "a"))
    conversations.log(conversation_id="no-run", messages=chat("q", "a"))
    assert conversations.get("in-run").latest.run_id == run.id
    assert conversations.get("no-run").latest.run_id is None
    assert ids(conversations.search(f"run_id = '{run.id}'")) == ["in-run"]


def test_redaction_hook_and_builtin_patterns(ws: Path) -> None:
    conversations.set_redactor("builtin")
    conversations.log(
        conversation_id="pii",
        messages=chat("I am bob@example.com, call +1 555 123 4567", "Your key sk-abcdefghijklmnop1234 is revoked"),
        metadata={"email": "bob@example.com", "plan": "pro"},
        user_feedback={"comment": "mail me: bob@example.com"},
    )
    stored = conversations.get("pii").latest
    assert stored.messages[0]["content"] == "I am [EMAIL], call [PHONE]"
    assert stored.messages[1]["content"] == "Your key [API_KEY] is revoked"
    assert stored.metadata == {"email": "[EMAIL]", "plan": "pro"}
    assert stored.comment == "mail me: [EMAIL]"
    conversations.feedback("pii", comment="reach me at eve@example.org")
    conversations.flush()
    assert conversations.get("pii").latest.comment == "reach me at [EMAIL]"

    def drop_internal(record):
        if record["metadata"].get("internal"):
            return None
        record["metadata"]["redacted"] = True
        return record

    conversations.set_redactor(drop_internal)
    assert conversations.log(conversation_id="kept", messages=chat("q", "a")) == "kept"
    assert conversations.log(conversation_id="dropped", messages=chat("q", "a"), metadata={"internal": 1}) is None
    assert conversations.get("kept").latest.metadata == {"redacted": True}
    with pytest.raises(NotFound):
        conversations.get("dropped")

    def broken(record):
        raise RuntimeError("boom")

    conversations.set_redactor(broken)
    assert conversations.log(conversation_id="never-unredacted", messages=chat("q", "a")) is None
    counts = conversations.counters()
    assert counts["redaction_errors"] == 1 and counts["redacted_out"] == 1
    with pytest.raises(NotFound):
        conversations.get("never-unredacted")


def test_redaction_configured_in_the_workspace(tmp_path: Path) -> None:
    from keel.sdk import session as sessions
    from keel.sdk.workspace import init_workspace

    init_workspace(tmp_path)
    config = tmp_path / ".keel" / "config.toml"
    config.write_text(
        config.read_text()
        + '\n[conversations]\nredact = "builtin"\n\n'
        + '[conversations.prices]\n"house-llm" = { prompt = 1, completion = 2 }\n'
    )
    try:
        conversations.log(conversation_id="cfg", messages=chat("bob@example.com", "ok"), model="house-llm",
                          tokens_used={"prompt": 1_000_000, "completion": 0})  # fmt: skip
        assert conversations.get("cfg").latest.messages[0]["content"] == "[EMAIL]"
        assert conversations.stats(by="model")[0].cost == pytest.approx(1.0)
    finally:
        sessions.reset()


def test_logged_records_survive_the_app_exiting_without_a_flush(ws: Path) -> None:
    script = textwrap.dedent(
        """
        from keel.sdk import conversations
        for i in range(2500):
            conversations.log(conversation_id=f"exit-{i}", messages=[{"role": "user", "content": str(i)}])
        conversations.feedback("exit-7", thumb="up")
        print("done")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ws, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert conversations.count("conversation_id like 'exit-%'") == 2500
    assert conversations.get("exit-7").latest.thumb == "up"
