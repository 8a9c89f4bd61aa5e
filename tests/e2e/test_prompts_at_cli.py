"""Issue 28 for prompts from the command line: ``--at`` in any time zone, ``alias rollback
--steps``, ``alias set --at``, and a revert made in git reaching the registry (real git)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_inprocess import keel as run_keel


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(map(str, args))} failed ({out.returncode}): {out.stderr}")
    return out


def _register(folder: Path, text: str, version: str) -> None:
    (folder / "t.txt").write_text(text + " {{ question }}\n")
    keel("prompts", "register", "chat", "-f", "t.txt", "-m", f"text {text}", "--version", version, cwd=folder)


@pytest.fixture(scope="module")
def issue_moves(tmp_path_factory):
    """The issue's moves: production 1.0.0 -> 1.0.1 -> 5.0.0 -> 1.0.0 -> 6.0.0 (made once)."""
    folder = tmp_path_factory.mktemp("moved")
    keel("init", cwd=folder)
    for text, version in (("A", "1.0.0"), ("B", "1.0.1"), ("C", "5.0.0"), ("D", "6.0.0")):
        _register(folder, text, version)
    for version in ("1.0.0", "1.0.1", "5.0.0", "1.0.0", "6.0.0"):
        keel("prompts", "alias", "set", "chat", "production", version, cwd=folder)
    return folder


@pytest.fixture
def moved(issue_moves, tmp_path):
    """A copy of the workspace of :func:`issue_moves` (each test may move the alias)."""
    folder = tmp_path / "ws"
    shutil.copytree(issue_moves, folder)
    return folder


def _history(folder: Path) -> list[dict]:
    return json.loads(keel("prompts", "alias", "history", "chat", "production", "--json", cwd=folder).stdout)


def test_history_shows_each_move_with_its_id_and_a_zoned_time(moved):
    moves = _history(moved)
    assert [(m["old"], m["new"]) for m in moves] == [
        (None, "1.0.0"),
        ("1.0.0", "1.0.1"),
        ("1.0.1", "5.0.0"),
        ("5.0.0", "1.0.0"),
        ("1.0.0", "6.0.0"),
    ]
    assert len({m["id"] for m in moves}) == 5 and all(isinstance(m["id"], int) for m in moves)
    text = keel("prompts", "alias", "history", "chat", "production", cwd=moved).stdout
    rows = [line for line in text.splitlines() if "production" in line]
    for move, row in zip(moves, rows, strict=True):
        assert row.split()[0] == str(move["id"]) and _printed(move["at"]) in row  # UTC, Z, milliseconds


@pytest.mark.parametrize(("steps", "expected"), [(None, "1.0.0"), ("2", "5.0.0"), ("3", "1.0.1"), ("4", "1.0.0")])
def test_alias_rollback_steps(moved, steps, expected):
    args = ["prompts", "alias", "rollback", "chat", "production"] + (["--steps", steps] if steps else [])
    assert keel(*args, cwd=moved).stdout.strip() == f"chat@production: 6.0.0 -> {expected}"
    assert keel("prompts", "render", "chat@production", "-v", "question=?", cwd=moved).stdout.startswith(
        {"1.0.0": "A", "5.0.0": "C", "1.0.1": "B"}[expected]
    )


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("prompts", "alias", "rollback", "chat", "production", "--steps", "9"), 4, "cannot be undone"),
        (("prompts", "rollback", "chat", "production", "--steps", "0"), 2, "--steps"),
        (("prompts", "alias", "set", "chat", "production", "--at", "2026-12-07T10:00:00"), 2, "no time zone"),
        (("prompts", "alias", "set", "chat", "production", "--at", "1733500000"), 2, "no unit"),
        (("prompts", "alias", "set", "chat", "production"), 2, "give a VERSION or --at"),
        (("prompts", "alias", "set", "chat", "production", "--at", "2001-01-01T00:00:00Z"), 4, "pointed nowhere"),
        (("prompts", "show", "chat", "--at", "2001-01-01T00:00:00Z"), 3, "no version of 'chat' existed"),
        (("prompts", "render", "chat", "--at", "2026-12-07 10:00"), 2, "no time zone"),
    ],
)
def test_errors_are_one_line(moved, args, code, needle):
    out = keel(*args, cwd=moved, check=False)
    assert out.returncode == code and needle in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 or code == 2 and "Usage" in out.stderr


def test_alias_set_at_a_time_copied_from_history(moved):
    moves = _history(moved)
    shown = keel("prompts", "alias", "history", "chat", "production", cwd=moved).stdout
    distinct = len({m["at"] for m in moves}) == len(moves)
    for move in moves if distinct else moves[-1:]:
        when = _printed(move["at"])
        assert when in shown
        out = keel("prompts", "alias", "set", "chat", "production", "--at", when, cwd=moved).stdout
        assert out.strip().endswith(f"-> {move['new']}")


def _printed(ms: int) -> str:
    from keel.core.times import format_at

    return format_at(ms)


# -- time zones: a time copied from the CLI gives one answer in every zone ------------------------
_SCRIPT = """
import contextlib, io, json, sys
from keel.cli.main import main
import keel

def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()

when = sys.argv[1]
code, shown, _ = run("prompts", "show", "chat", "--at", when, "--json")
print(json.dumps({
    "show": [(v["version"], v["aliases"]) for v in json.loads(shown)],
    "alias": run("prompts", "render", "chat@production", "--at", when, "-v", "question=?")[1],
    "latest": run("prompts", "render", "chat", "--at", when, "-v", "question=?")[1],
    "api": [keel.prompts.resolve("chat", "production", at=when), keel.prompts.get("chat", at=when).version],
    "zoneless": run("prompts", "show", "chat", "--at", when.rstrip("Z"))[0],
}))
"""


def test_a_time_copied_from_the_cli_means_one_instant_in_every_zone(tmp_path):
    keel("init", cwd=tmp_path)
    _register(tmp_path, "A", "1.0.0")
    keel("prompts", "alias", "set", "chat", "production", "1.0.0", cwd=tmp_path)
    moves = _history(tmp_path)
    _register(tmp_path, "B", "1.1.0")  # registered after the copied time: not latest then
    keel("prompts", "alias", "set", "chat", "production", "1.1.0", cwd=tmp_path)
    shown = keel("prompts", "alias", "history", "chat", "production", cwd=tmp_path).stdout
    when = _printed(moves[0]["at"])
    assert when in shown  # copied from the output
    later = _history(tmp_path)[-1]["at"]
    if later == moves[0]["at"] or keel("prompts", "log", "chat", cwd=tmp_path).stdout.count(when) > 1:
        pytest.skip("the moves fell in one millisecond")  # practically never: a CLI call takes longer
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    answers = {}
    for zone in ("UTC", "America/New_York", "Asia/Tokyo"):
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, when],
            cwd=tmp_path,
            env={**env, "TZ": zone},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        answers[zone] = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        "show": [["1.0.0", ["production"]]],
        "alias": "A ?\n",
        "latest": "A ?\n",
        "api": ["1.0.0", "1.0.0"],
        "zoneless": 2,
    }
    assert answers == {zone: expected for zone in answers}


# -- a revert made in git reaches the registry -----------------------------------------------------
CONFIG = 'chat:\n  version: "{version}"\n  model: "gpt-4"\n  system_prompt: "prompts/chat/system_prompt.txt"\n'


def _git(folder: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    return subprocess.run(["git", *args], cwd=folder, env=env, check=True, capture_output=True, text=True).stdout


def _files(folder: Path, version: str, text: str, changelog: str) -> None:
    prompts = folder / "prompts"
    (prompts / "chat").mkdir(parents=True, exist_ok=True)
    (prompts / "prompt_config.yaml").write_text(CONFIG.format(version=version))
    (prompts / "chat" / "system_prompt.txt").write_text(text)
    (prompts / "chat" / "CHANGELOG.md").write_text(changelog)


def _restore_text_only(folder: Path, first: str) -> None:
    _git(folder, "checkout", first, "--", "prompts/chat/system_prompt.txt")


def _restore_text_and_bump(folder: Path, first: str) -> None:
    _git(folder, "checkout", first, "--", "prompts/chat/system_prompt.txt")
    (folder / "prompts" / "prompt_config.yaml").write_text(CONFIG.format(version="2.0"))
    log = folder / "prompts" / "chat" / "CHANGELOG.md"
    log.write_text("## 2.0\nBack to the first wording.\n\n" + log.read_text())


@pytest.fixture(scope="module")
def synced_twice(tmp_path_factory):
    """A git repository whose prompt files were committed and synced at 1.3, then at 1.4."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    folder = tmp_path_factory.mktemp("repo")
    keel("init", cwd=folder)
    _git(folder, "init", "-q")
    _files(folder, "1.3", "You are a helpful agent. {{ question }}\n", "## 1.3\nFirst.\n")
    _git(folder, "add", "prompts")
    _git(folder, "commit", "-q", "-m", "1.3")
    assert "registered chat@1.3.0" in keel("prompts", "sync", cwd=folder).stdout
    _files(folder, "1.4", "You are a terse agent. {{ question }}\n", "## 1.4\nTerser.\n\n## 1.3\nFirst.\n")
    _git(folder, "commit", "-q", "-am", "1.4")
    assert "registered chat@1.4.0" in keel("prompts", "sync", cwd=folder).stdout
    return folder


@pytest.mark.parametrize(
    ("restore", "registered", "stale"),
    [
        (lambda folder, first: _git(folder, "revert", "--no-edit", "HEAD"), "1.4.1", False),  # git revert
        (lambda folder, first: _git(folder, "checkout", first, "--", "prompts"), "1.4.1", False),  # old files back
        # the text back, the version left at 1.4: 1.4.0 is other text, so the files must then say 1.4.1
        (_restore_text_only, "1.4.1", True),
        (_restore_text_and_bump, "2.0.0", False),  # the text back under a version above the latest
    ],
    ids=["git-revert", "git-checkout", "text-only", "text-and-bump"],
)
def test_a_revert_in_git_reaches_the_registry(synced_twice, tmp_path, restore, registered, stale):
    tmp_path = tmp_path / "repo"
    shutil.copytree(synced_twice, tmp_path)
    first = _git(tmp_path, "rev-parse", "HEAD~1").strip()
    restore(tmp_path, first)
    checked = keel("prompts", "check", cwd=tmp_path)  # a sync would fix it: pending, exit 0
    assert "agree" not in checked.stdout and "run 'keel prompts sync'" in checked.stdout
    assert (f'set version: "{registered}"' in checked.stdout) is stale
    strict = keel("prompts", "check", "--strict", cwd=tmp_path, check=False)
    assert strict.returncode == 4 and "keel prompts sync" in strict.stderr
    assert f"registered chat@{registered}" in keel("prompts", "sync", cwd=tmp_path).stdout
    if stale:
        out = keel("prompts", "check", "--strict", cwd=tmp_path, check=False)
        assert out.returncode == 4 and f"identical to the registered chat@{registered}" in out.stderr
        (tmp_path / "prompts" / "prompt_config.yaml").write_text(CONFIG.format(version=registered))
    assert "agree" in keel("prompts", "check", "--strict", cwd=tmp_path).stdout
    served = keel("prompts", "render", "chat", "-v", "question=?", cwd=tmp_path).stdout
    assert served == "You are a helpful agent. ?\n"  # what the files say, as check says
    assert "0 registered, 1 unchanged" in keel("prompts", "sync", cwd=tmp_path).stdout
    versions = [v["version"] for v in json.loads(keel("prompts", "show", "chat", "--json", cwd=tmp_path).stdout)]
    assert versions == [registered, "1.4.0", "1.3.0"]
