"""``keel review ...`` as a user runs it (in process: see ``tests/cli_inprocess.py``)."""

import json

import pytest

from cli_inprocess import keel as run_keel
from cli_inprocess import python_in


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(map(str, args))} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    keel("init", cwd=tmp_path)
    import keel as api

    with python_in(tmp_path):
        api.prompts.register("chat", "Answer: {{q}}", version="1.0.0", changelog="first")
        api.prompts.register("chat", "Answer briefly: {{q}}", version="1.1.0", changelog="shorter")
        api.prompts.set_alias("chat", "production", "1.0.0")
    return tmp_path


def test_protect_request_approve_and_refusals(folder, tmp_path):
    out = keel("review", "protect", "prompt", "chat", "production", "--approvals", "1", cwd=folder).stdout
    assert "protected production of prompt chat: 1 approval(s), self-approval off" in out
    assert "production" in keel("review", "rules", cwd=folder).stdout

    moved = keel("prompts", "alias", "set", "chat", "production", "1.1.0", cwd=folder, check=False)
    assert moved.returncode == 4 and "is protected" in moved.stderr and "keel review request" in moved.stderr
    assert len(moved.stderr.strip().splitlines()) == 1

    missing = keel(
        "review", "request", "prompt", "chat", "production", "9.0.0", "--reason", "x", cwd=folder, check=False
    )
    assert missing.returncode == 3 and "no version 9.0.0" in missing.stderr

    (tmp_path / "cmp.json").write_text(json.dumps({"metric": "exact_match", "delta": 0.04}))
    opened = keel(
        "review",
        "request",
        "prompt",
        "chat",
        "production",
        "1.1.0",
        "--reason",
        "+4% exact match",
        "--comparison",
        tmp_path / "cmp.json",
        "--who",
        "alice",
        "--json",
        cwd=folder,
    ).stdout
    request = json.loads(opened)
    assert (request["status"], request["from_target"], request["to_target"]) == ("open", "1.0.0", "1.1.0")
    rid = str(request["id"])

    listed = keel("review", "list", "--status", "open", cwd=folder).stdout
    assert "alice" in listed and "1.1.0" in listed
    shown = keel("review", "show", rid, cwd=folder).stdout
    assert "1.0.0 -> 1.1.0" in shown and "+Answer briefly" in shown and "exact_match" in shown

    own = keel("review", "approve", rid, "--who", "alice", cwd=folder, check=False)
    assert own.returncode == 7 and "self-approval is off" in own.stderr
    done = keel("review", "approve", rid, "--who", "bob", "-m", "ship it", cwd=folder).stdout
    assert "approved and applied change request" in done
    twice = keel("review", "approve", rid, "--who", "bob", cwd=folder, check=False)
    assert twice.returncode == 4 and "is applied" in twice.stderr
    with python_in(folder):
        import keel as api

        assert api.prompts.get("chat", "production").version == "1.1.0"

    glass = keel(
        "review", "break-glass", "prompt", "chat", "production", "1.0.0", "--reason", "incident 9", cwd=folder
    ).stdout
    assert "break glass" in glass
    history = keel("prompts", "alias", "history", "chat", "production", cwd=folder).stdout
    assert "break glass: incident 9" in history and "change request" in history

    rejected = keel("review", "request", "prompt", "chat", "production", "1.1.0", "-r", "again", cwd=folder).stdout
    rid2 = rejected.split()[3].rstrip(":")
    assert "rejected change request" in keel("review", "reject", rid2, "--who", "bob", cwd=folder).stdout
    keel("review", "unprotect", "prompt", "chat", "production", "-r", "done", cwd=folder)
    keel("prompts", "alias", "set", "chat", "production", "1.1.0", cwd=folder)
