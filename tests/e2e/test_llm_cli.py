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
