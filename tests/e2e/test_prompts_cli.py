"""``keel prompts ...`` as a user runs it (the CLI in-process: see ``tests/cli_inprocess.py``)."""

import json
import subprocess
import sys

import pytest

from cli_inprocess import keel as run_keel


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def folder(tmp_path):
    keel("init", cwd=tmp_path)
    (tmp_path / "v1.txt").write_text("Answer briefly: {{ question }}\n")
    (tmp_path / "v2.txt").write_text("Answer briefly and cite the policy: {{ question }}\n")
    (tmp_path / "chat.json").write_text(
        json.dumps(
            [
                {"role": "system", "content": "You work for {{ company }}."},
                {"role": "user", "content": "{{ question }}"},
            ]
        )
    )
    return tmp_path


def test_register_alias_render_diff_rollback(folder):
    out = keel(
        "prompts",
        "register",
        "chat",
        "-f",
        "v1.txt",
        "--model",
        "gpt-4",
        "-p",
        "temperature=0.7",
        "-m",
        "First version",
        cwd=folder,
    )
    assert out.stdout.strip() == "registered chat@1.0.0"
    again = keel(
        "prompts",
        "register",
        "chat",
        "-f",
        "v1.txt",
        "--model",
        "gpt-4",
        "-p",
        "temperature=0.7",
        "-m",
        "same",
        cwd=folder,
    )
    assert "already registered as chat@1.0.0" in again.stdout
    keel(
        "prompts",
        "register",
        "chat",
        "-f",
        "v2.txt",
        "--model",
        "gpt-4",
        "-p",
        "temperature=0.7",
        "-m",
        "Cite the policy",
        cwd=folder,
    )
    keel("prompts", "alias", "set", "chat", "production", "1.0.0", "--reason", "launch", cwd=folder)
    keel("prompts", "alias", "set", "chat", "production", "1.0.1", "--reason", "+5% accuracy", cwd=folder)
    rendered = keel("prompts", "render", "chat@production", "--var", "question=How do refunds work?", cwd=folder)
    assert rendered.stdout == "Answer briefly and cite the policy: How do refunds work?\n"
    diff = json.loads(keel("prompts", "diff", "chat", "1.0.0", "1.0.1", "--json", cwd=folder).stdout)
    assert diff["required_bump"] == "patch"
    unified = keel("prompts", "diff", "chat", "1.0.0", "production", "--unified", cwd=folder).stdout
    assert "+Answer briefly and cite the policy: {{ question }}" in unified
    assert (
        keel("prompts", "rollback", "chat", "production", cwd=folder).stdout.strip()
        == "chat@production: 1.0.1 -> 1.0.0"
    )
    history = json.loads(keel("prompts", "alias", "history", "chat", "production", "--json", cwd=folder).stdout)
    assert [(m["old"], m["new"], m["reason"]) for m in history] == [
        (None, "1.0.0", "launch"),
        ("1.0.0", "1.0.1", "+5% accuracy"),
        ("1.0.1", "1.0.0", "rollback of production"),
    ]
    shown = json.loads(keel("prompts", "show", "chat", "--json", cwd=folder).stdout)
    assert [(v["version"], v["aliases"]) for v in shown] == [("1.0.1", []), ("1.0.0", ["production"])]
    listed = keel("prompts", "list", cwd=folder).stdout
    assert "chat" in listed and "1.0.1" in listed
    log = keel("prompts", "log", "chat", cwd=folder).stdout
    assert "Cite the policy" in log and "First version" in log
    keel("prompts", "alias", "rm", "chat", "production", cwd=folder)
    assert keel("prompts", "render", "chat@production", cwd=folder, check=False).returncode == 3


def test_chat_prompt_from_json(folder):
    keel("prompts", "register", "support", "-f", "chat.json", "-m", "chat", cwd=folder)
    out = keel("prompts", "render", "support", "-v", "company=Acme", "-v", "question=Hi?", cwd=folder).stdout
    assert out == "[system]\nYou work for Acme.\n[user]\nHi?\n"


def test_show_lists_the_metrics_of_runs_that_used_each_version(folder):
    keel("prompts", "register", "chat", "-f", "v1.txt", "-m", "v1", cwd=folder)
    code = (
        "import keel\n"
        "for acc in (0.8, 0.9):\n"
        "    with keel.start_run(project='p'):\n"
        "        keel.prompts.load('chat@1.0.0').render(question='q')\n"
        "        keel.log_metric('accuracy', acc)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True)
    shown = json.loads(keel("prompts", "show", "chat", "--json", cwd=folder).stdout)
    assert shown[0]["runs"] == 2 and shown[0]["run_metrics_mean"]["accuracy"] == pytest.approx(0.85)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("prompts", "show", "nope"), 3, "no prompt named 'nope'"),
        (("prompts", "register", "x", "-f", "missing.txt", "-m", "m"), 2, "no file at missing.txt"),
        (("prompts", "render", "chat@9.9.9"), 3, "no prompt named 'chat'"),
        (("prompts", "alias", "set", "chat", "latest", "1.0.0"), 2, "implicit"),
    ],
)
def test_errors_are_one_line(folder, args, code, needle):
    out = keel(*args, cwd=folder, check=False)
    assert out.returncode == code and needle in out.stderr and out.stderr.count("\n") == 1


def _write_prompt_dir(folder, version="1.3", text="You are a helpful support agent.\n", changelog=True):
    prompts = folder / "prompts"
    (prompts / "chat").mkdir(parents=True, exist_ok=True)
    (prompts / "chat" / "system_prompt.txt").write_text(text)
    (prompts / "prompt_config.yaml").write_text(
        "chat:\n"
        f'  version: "{version}"\n'
        '  model: "gpt-4"\n'
        "  temperature: 0.7\n"
        '  system_prompt: "prompts/chat/system_prompt.txt"\n'
    )
    entries = "# Changelog\n\n## 1.3\nFirst tracked version.\n"
    if changelog and version != "1.3":
        entries = f"# Changelog\n\n## {version}\nReworded.\n\n## 1.3\nFirst tracked version.\n"
    (prompts / "chat" / "CHANGELOG.md").write_text(entries)


def test_sync_check_export_round_trip(folder):
    _write_prompt_dir(folder)
    assert keel("prompts", "sync", cwd=folder).stdout.strip().splitlines() == [
        "registered chat@1.3.0",
        "1 registered, 0 unchanged",
    ]
    assert "0 registered, 1 unchanged" in keel("prompts", "sync", cwd=folder).stdout
    assert keel("prompts", "check", cwd=folder).returncode == 0

    _write_prompt_dir(folder, text="You are a terse support agent.\n")  # edited, version not bumped
    out = keel("prompts", "check", cwd=folder, check=False)
    assert out.returncode == 4 and "prompts/prompt_config.yaml:2" in out.stderr and "1.3.1" in out.stderr
    failed = keel("prompts", "sync", cwd=folder, check=False)
    assert failed.returncode == 4 and "nothing was registered" in failed.stderr
    assert [v["version"] for v in json.loads(keel("prompts", "show", "chat", "--json", cwd=folder).stdout)] == ["1.3.0"]

    _write_prompt_dir(folder, version="1.3.1", text="You are a terse support agent.\n")
    assert "registered chat@1.3.1" in keel("prompts", "sync", cwd=folder).stdout

    export_dir = folder / "exported"
    keel("prompts", "export", "chat", "--dir", str(export_dir / "prompts"), cwd=folder)
    assert (export_dir / "prompts" / "chat" / "system_prompt.txt").read_text() == "You are a terse support agent.\n"
    assert (
        "0 registered, 1 unchanged" in keel("prompts", "sync", "--dir", str(export_dir / "prompts"), cwd=folder).stdout
    )
