"""``keel conversations ...`` as a user runs it (the CLI in-process: see ``tests/cli_inprocess.py``)."""

import json
import subprocess
import sys

import pytest

from cli_inprocess import keel as run_keel

APP = """\
from keel.sdk import conversations

def chat(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

conversations.log({"conversation_id": "c-100", "messages": chat("Where is my order?", "It ships tomorrow."),
                   "model": "gpt-4", "prompt_version": "support@1.0.0", "user_feedback": {"thumb": "up"},
                   "tokens_used": {"prompt": 800, "completion": 60}, "latency_ms": 1200,
                   "metadata": {"user_id": "u1", "environment": "prod"}})
conversations.log({"conversation_id": "c-200", "messages": chat("Refund please", "No."),
                   "model": "gpt-4o", "prompt_version": "support@1.1.0",
                   "tokens_used": {"prompt": 500, "completion": 10}, "latency_ms": 300,
                   "metadata": {"user_id": "u2", "environment": "prod"}})
conversations.log(conversation_id="c-300", messages=chat("Hi", "Hello!"), model="gpt-4o",
                  prompt_version="support@1.1.0", latency_ms=100, metadata={"environment": "dev"})
conversations.log({"messages": "oops"})  # refused, counted, the app goes on
conversations.feedback("c-200", thumb="down", comment="rude")
print(conversations.counters()["invalid"])
"""


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    keel("init", cwd=tmp_path)
    app = subprocess.run([sys.executable, "-c", APP], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert app.returncode == 0, app.stderr
    assert app.stdout.strip() == "1"
    assert "conversation not logged: invalid conversation record: messages must be a list" in app.stderr
    return tmp_path


def test_list_show_stats_export(folder):
    listed = json.loads(keel("conversations", "list", "--json", cwd=folder).stdout)
    assert [c["conversation_id"] for c in listed] == ["c-300", "c-200", "c-100"]
    text = keel("conversations", "list", cwd=folder).stdout
    assert "c-200" in text and "down" in text and "support@1.1.0" in text

    down = keel("conversations", "list", "--filter", "feedback.thumb = 'down' and model = 'gpt-4o'", "--json",
                cwd=folder)  # fmt: skip
    assert [c["conversation_id"] for c in json.loads(down.stdout)] == ["c-200"]
    since = keel("conversations", "list", "--since", "1h", "--limit", "1", "--json", cwd=folder)
    assert len(json.loads(since.stdout)) == 1

    shown = keel("conversations", "show", "c-2", cwd=folder).stdout  # a unique prefix
    assert "Refund please" in shown and "thumb down" in shown and "comment 'rude'" in shown
    assert "feedback events" in shown
    detail = json.loads(keel("conversations", "show", "c-200", "--json", cwd=folder).stdout)
    assert detail["records"][0]["user_feedback"]["thumb"] == "down"

    stats = json.loads(keel("conversations", "stats", "--by", "prompt_version", "--json", cwd=folder).stdout)
    by_prompt = {s["prompt_version"]: s for s in stats}
    assert by_prompt["support@1.1.0"]["count"] == 2 and by_prompt["support@1.1.0"]["thumbs_up_rate"] == 0.0
    assert by_prompt["support@1.0.0"]["cost_usd"] == pytest.approx((800 * 30 + 60 * 60) / 1e6)
    assert by_prompt["support@1.1.0"]["latency_p50_ms"] == 200.0
    table = keel("conversations", "stats", "--by", "metadata.environment", cwd=folder).stdout
    assert "prod" in table and "dev" in table
    (folder / "prices.json").write_text('{"gpt-4o": {"prompt": 1000000, "completion": 0}}')
    priced = keel("conversations", "stats", "--by", "model", "--prices", "prices.json", "--json", cwd=folder)
    assert {s["model"]: s["cost_usd"] for s in json.loads(priced.stdout)}["gpt-4o"] == pytest.approx(500.0)

    out = keel("conversations", "export", "--filter", "feedback.thumb = 'down'", "--to", "dataset.jsonl", cwd=folder)
    assert out.stdout.strip() == "wrote 1 conversations to dataset.jsonl"
    line = json.loads((folder / "dataset.jsonl").read_text())
    assert line["input"] == [{"role": "user", "content": "Refund please"}] and line["output"] == "No."


def test_feedback_from_the_command_line(folder):
    out = keel("conversations", "feedback", "c-3", "--thumb", "up", "--score", "4", "--comment",
               "great, key sk-abcdefghijklmnopqrstuvwx1234", cwd=folder)  # fmt: skip
    feedback = "thumb up, score 4, comment 'great, key ***'"
    assert out.stdout.strip() == f"recorded: conversation c-300 feedback is now {feedback}"
    later = json.loads(keel("conversations", "feedback", "c-300", "--score", "2", "--json", cwd=folder).stdout)
    assert later["user_feedback"] == {"thumb": "up", "score": 2.0, "comment": "great, key ***"}
    up = keel("conversations", "list", "--filter", "feedback.thumb = 'up' and feedback.score < 3", "--json", cwd=folder)
    assert [c["conversation_id"] for c in json.loads(up.stdout)] == ["c-300"]
    events = json.loads(keel("conversations", "show", "c-300", "--json", cwd=folder).stdout)["feedback_events"]
    assert [(e["thumb"], e["score"]) for e in events] == [("up", 4.0), (None, 2.0)]

    unknown = keel("conversations", "feedback", "c-999", "--thumb", "up", cwd=folder, check=False)
    assert unknown.returncode == 3 and unknown.stderr.count("\n") == 1 and "no conversation 'c-999'" in unknown.stderr
    empty = keel("conversations", "feedback", "c-300", cwd=folder, check=False)
    assert empty.returncode == 2 and "--thumb up|down, --score NUMBER or --comment TEXT" in empty.stderr


def test_mistakes_are_one_line_errors(folder):
    bad = keel("conversations", "list", "--filter", "model = ", cwd=folder, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    unknown = keel("conversations", "show", "nope", cwd=folder, check=False)
    assert unknown.returncode == 3 and "no conversation 'nope'" in unknown.stderr
    group = keel("conversations", "stats", "--by", "colour", cwd=folder, check=False)
    assert group.returncode == 2 and "cannot group conversations by 'colour'" in group.stderr
    when = keel("conversations", "list", "--since", "last tuesday", cwd=folder, check=False)
    assert when.returncode == 2 and "invalid time" in when.stderr


def test_no_workspace_is_an_error_not_a_new_store(tmp_path):
    out = keel("conversations", "list", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "no keel workspace" in out.stderr
    assert not (tmp_path / ".keel").exists()
