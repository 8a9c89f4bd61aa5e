"""A run records where it ran: the real git commit and dirty flag, host, versions."""

import socket
import subprocess
import sys
import textwrap

import keel


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _log_a_run(cwd) -> str:
    code = textwrap.dedent(
        """
        import keel
        with keel.start_run(project="ctx") as run:
            keel.log_metric("m", 1)
        print(run.id)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_git_commit_dirty_flag_host_and_versions(ws):
    _git(ws, "init", "-q")
    _git(ws, "config", "user.email", "t@example.com")
    _git(ws, "config", "user.name", "t")
    (ws / "prompt.txt").write_text("You are helpful.\n")
    _git(ws, "add", "prompt.txt")
    _git(ws, "commit", "-qm", "v1")
    head = _git(ws, "rev-parse", "HEAD")

    clean = keel.Client().get_run(_log_a_run(ws))
    assert clean.context["git"] == {
        "commit": head,
        "dirty": False,
        "branch": _git(ws, "rev-parse", "--abbrev-ref", "HEAD"),
    }

    (ws / "prompt.txt").write_text("You are terse.\n")  # an uncommitted change to a tracked file
    dirty = keel.Client().get_run(_log_a_run(ws))
    assert dirty.context["git"]["commit"] == head and dirty.context["git"]["dirty"] is True

    assert clean.context["hostname"] == socket.gethostname()
    assert clean.context["python"] == ".".join(map(str, sys.version_info[:3]))
    assert clean.context["keel"] == keel.__version__
    assert isinstance(clean.context["packages"], dict)


def test_outside_a_git_repository_there_is_no_git_context(ws):
    record = keel.Client().get_run(_log_a_run(ws))
    assert "git" not in record.context
