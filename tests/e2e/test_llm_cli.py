"""``keel llm ...`` as a user runs it: the stand-in server, listing, showing, sharing cassettes.

The ``keel llm`` commands run in-process (see ``tests/cli_inprocess.py``); the stand-in server
and the recording/replaying scripts are processes of their own."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_inprocess import keel as run_keel
from cli_inprocess import keel_env

KEEL = Path(sys.executable).with_name("keel")

RECORD = """\
import sys, keel, openai
from keel.sdk import llm
client = llm.wrap(openai.OpenAI(base_url=sys.argv[1], api_key="standin", max_retries=0))
with keel.start_run(project="math", name="gpt4") as run:
    for a in (2, 17):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": f"What is {a} + 25?"}],
                                       temperature=0, extra_keel={"rag_index_version": "kb-1"})
client.close()
print(run.id)
"""

REPLAY = """\
import sys, keel, openai
from keel.sdk import llm
client = llm.wrap(openai.OpenAI(base_url=sys.argv[1], api_key="standin", max_retries=0), mode="replay")
r = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "What is 17 + 25?"}],
                                   temperature=0)
print(r.choices[0].message.content, type(r).__name__)
"""


def keel(*args, cwd, check=True):
    env = {k: v for k, v in keel_env().items() if k != "KEEL_LLM_MODE"}
    out = run_keel(*args, cwd=cwd, env=env)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def python(script, *args, cwd):
    out = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def standin(tmp_path):
    """``keel llm standin`` in the foreground of a child process, on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [str(KEEL), "llm", "standin", "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    banner = proc.stdout.readline()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1", banner, proc
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def test_record_list_show_export_import_replay(tmp_path, standin):
    base_url, banner, proc = standin
    assert "NOT a real LLM" in banner and base_url in banner
    team = tmp_path / "team"
    team.mkdir()
    keel("init", cwd=team)
    run_id = python(RECORD, base_url, cwd=team)

    listed = json.loads(keel("llm", "calls", "--run", run_id[:8], "--json", cwd=team).stdout)
    assert [c["model"] for c in listed] == ["gpt-4", "gpt-4"]
    assert all(c["run_id"] == run_id and c["context"]["rag_index_version"] == "kb-1" for c in listed)
    text = keel("llm", "calls", cwd=team).stdout
    assert listed[0]["request_hash"][:12] in text and "2 calls, $" in text

    shown = keel("llm", "show", listed[1]["request_hash"][:8], cwd=team).stdout
    assert "What is 17 + 25?" in shown and "fp_keel_standin" in shown and f"run {run_id}" in shown

    out = keel("llm", "export", "--run", run_id, "--to", str(tmp_path / "math.jsonl"), cwd=team).stdout
    assert out.strip() == f"exported 2 calls to {tmp_path / 'math.jsonl'}"
    proc.terminate()
    proc.wait(timeout=10)

    laptop = tmp_path / "laptop"
    laptop.mkdir()
    keel("init", cwd=laptop)
    missing = subprocess.run([sys.executable, "-c", REPLAY, base_url], cwd=laptop, capture_output=True, text=True)
    assert missing.returncode != 0 and "ReplayMiss" in missing.stderr
    imported = keel("llm", "import", str(tmp_path / "math.jsonl"), cwd=laptop).stdout
    assert imported.startswith("imported 2 calls as cassette math@")
    assert json.loads(keel("llm", "calls", "--cassette", "math", "--json", cwd=laptop).stdout)[0]["cassette"] == "math"
    assert python(REPLAY, base_url, cwd=laptop) == "42 ChatCompletion"


def test_errors_are_one_line(tmp_path):
    keel("init", cwd=tmp_path)
    out = keel("llm", "show", "abcdef12", cwd=tmp_path, check=False)
    assert out.returncode == 3 and out.stderr.startswith("error: no recorded LLM call with request hash abcdef12")
    (tmp_path / "bad.jsonl").write_text('{"hello": 1}\n')
    out = keel("llm", "import", "bad.jsonl", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "is not a keel cassette file" in out.stderr
    out = keel("llm", "export", "--to", "x.jsonl", cwd=tmp_path, check=False)
    assert out.returncode == 3 and "no recorded LLM calls to export" in out.stderr
    assert keel("llm", "calls", "--json", cwd=tmp_path).stdout.strip() == "[]"


def _write_calls(folder, users):
    """Recorded calls of each user (metadata user_id) in one pack, through the Python API."""
    from cli_inprocess import python_in
    from keel.core.entities import now_ms
    from keel.sdk import session
    from keel.services.llm import PendingCall

    calls = [
        PendingCall(
            "chat.completions",
            {"model": "gpt-4", "messages": [{"role": "user", "content": f"{user} asks {i}"}]},
            {"id": f"c{i}", "object": "chat.completion", "model": "gpt-4", "choices": []},
            1.0,
            now_ms(),
            context={"metadata": {"user_id": user}},
        )
        for user, count in users.items()
        for i in range(count)
    ]
    with python_in(folder):
        session.get_session().llm.write(calls)


def _users(folder):
    listed = json.loads(keel("llm", "calls", "--json", cwd=folder).stdout)
    return sorted(c["context"]["metadata"]["user_id"] for c in listed), [c["id"] for c in listed]


def test_delete_counts_asks_and_erases(tmp_path):
    keel("init", cwd=tmp_path)
    _write_calls(tmp_path, {"u-42": 3, "u-7": 2})
    users, ids = _users(tmp_path)
    assert users == ["u-42"] * 3 + ["u-7"] * 2 and all(isinstance(i, int) for i in ids)
    by_user = ["--filter", "metadata.user_id = 'u-42'"]

    out = keel("llm", "delete", *by_user, "--dry-run", cwd=tmp_path)
    assert out.stdout.strip() == "3 recorded LLM calls match (dry run: nothing erased)"
    out = keel("llm", "delete", *by_user, cwd=tmp_path, check=False)  # stdin is not a terminal
    assert out.returncode == 2 and out.stderr.startswith("error: 3 recorded LLM calls match; erasing them needs")
    assert "--yes" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = keel("llm", "delete", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "nothing selects" in out.stderr and "--all" in out.stderr
    out = keel("llm", "delete", "--filter", "model = 'gpt-4'", "--yes", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "matches every recorded LLM call (5)" in out.stderr
    out = keel("llm", "delete", str(ids[0]), "424242", "--yes", cwd=tmp_path, check=False)
    assert out.returncode == 3 and "no recorded LLM call with id 424242" in out.stderr
    assert _users(tmp_path)[0] == users  # nothing erased by any refusal

    out = keel("llm", "delete", *by_user, "--yes", cwd=tmp_path)
    assert out.stdout.startswith("erased 3 recorded LLM calls (1 pack objects removed, ")
    assert _users(tmp_path)[0] == ["u-7", "u-7"]
    out = keel("llm", "delete", *by_user, "--yes", cwd=tmp_path)
    assert out.stdout.strip() == "no recorded LLM call matches: nothing erased"
    report = json.loads(keel("llm", "delete", str(_users(tmp_path)[1][0]), "--yes", "--json", cwd=tmp_path).stdout)
    assert (report["kind"], report["matched"], report["deleted"], report["dry_run"]) == ("llm_calls", 1, 1, False)


def test_delete_asks_on_a_terminal(tmp_path):
    import os
    import pty

    keel("init", cwd=tmp_path)
    _write_calls(tmp_path, {"u-42": 2, "u-7": 1})
    for answer, erased in (("n", False), ("y", True)):
        main, terminal = pty.openpty()
        proc = subprocess.Popen(
            [str(KEEL), "llm", "delete", "--filter", "metadata.user_id = 'u-42'"],
            cwd=tmp_path, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=keel_env(),
        )  # fmt: skip
        os.close(terminal)
        os.write(main, f"{answer}\n".encode())
        out, err = proc.communicate(timeout=60)
        os.close(main)
        assert "Erase 2 recorded LLM calls for good? [y/N]" in out, err
        assert (proc.returncode == 0) is erased
        assert ("erased 2 recorded LLM calls" in out) is erased and ("nothing erased" in out) is not erased
        assert _users(tmp_path)[0] == (["u-7"] if erased else ["u-42", "u-42", "u-7"])
