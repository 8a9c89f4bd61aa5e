"""``keel conversations delete``, ``keel traces delete``, ``keel erase --user`` and ``keel
erasures list`` as an operator runs them: the count first, a confirmation on a terminal (a
real pseudo-terminal here), refused without one unless ``--yes``, ``--dry-run`` only counts."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_inprocess import keel, keel_env, python_in


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    assert keel("init", cwd=tmp_path).returncode == 0
    with python_in(tmp_path):
        from keel.sdk import conversations, traces

        for i in range(6):
            user = "u-42" if i % 2 else "u-7"
            conversations.log(
                {
                    "conversation_id": f"c-{i}",
                    "messages": [{"role": "user", "content": f"hello {i}"}],
                    "metadata": {"user_id": user},
                }
            )
        now = time.time_ns()
        traces.ingest(
            [
                {
                    "trace_id": secrets.token_hex(16),
                    "span_id": secrets.token_hex(8),
                    "name": "answer",
                    "start_ns": now + i,
                    "end_ns": now + i + 1000,
                    "attributes": {"keel.user_id": "u-42" if i % 2 else "u-7"},
                }
                for i in range(4)
            ]
        )
    return tmp_path


def _count(folder: Path, user: str) -> int:
    listed = keel("conversations", "list", "--filter", f"metadata.user_id = '{user}'", "--json", cwd=folder)
    return len(json.loads(listed.stdout))


def test_without_a_terminal_it_asks_for_yes_and_deletes_nothing(folder: Path) -> None:
    plan = keel("conversations", "delete", "--filter", "metadata.user_id = 'u-42'", "--dry-run", cwd=folder)
    assert plan.returncode == 0 and "3 conversation records match (dry run: nothing erased)" in plan.stdout
    refused = keel("conversations", "delete", "--filter", "metadata.user_id = 'u-42'", cwd=folder)
    assert refused.returncode != 0
    assert "needs a confirmation, and there is no terminal to ask on" in refused.stderr and "--yes" in refused.stderr
    everything = keel("conversations", "delete", "--filter", "metadata.user_id != 'x'", "--yes", cwd=folder)
    assert everything.returncode != 0 and "--all" in everything.stderr
    unknown = keel("conversations", "delete", "c-1", "nope", "--yes", cwd=folder)
    assert unknown.returncode != 0 and "no conversations 'nope'; nothing was deleted" in unknown.stderr
    assert _count(folder, "u-42") == 3

    done = keel("conversations", "delete", "--filter", "metadata.user_id = 'u-42'", "--yes", cwd=folder)
    assert done.returncode == 0 and "erased 3 conversation records; audit entry 1" in done.stdout
    assert (_count(folder, "u-42"), _count(folder, "u-7")) == (0, 3)
    traced = keel("traces", "delete", "--filter", "user_id = 'u-42'", "--yes", "--json", cwd=folder)
    assert json.loads(traced.stdout)["deleted"] == 2

    audit = json.loads(keel("erasures", "list", "--json", cwd=folder).stdout)
    assert [(e["kind"], e["deleted"], e["filter"]) for e in audit] == [
        ("traces", 2, "user_id = 'u-42'"),
        ("conversations", 3, "metadata.user_id = 'u-42'"),
    ]
    assert "metadata.user_id = 'u-42'" in keel("erasures", "list", cwd=folder).stdout


def test_erase_user_counts_every_kind_then_erases(folder: Path) -> None:
    plan = keel("erase", "--user", "u-42", "--dry-run", cwd=folder)
    assert plan.returncode == 0
    assert "3 conversation records match" in plan.stdout and "2 traces in project default match" in plan.stdout
    assert "0 recorded LLM calls match" in plan.stdout
    done = keel("erase", "--user", "u-42", "--yes", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "erased 3 conversation records" in done.stdout and "erased 2 traces in project default" in done.stdout
    assert (_count(folder, "u-42"), _count(folder, "u-7")) == (0, 3)
    again = keel("erase", "--user", "u-42", cwd=folder)  # nothing left: nothing to confirm
    assert again.returncode == 0 and "0 conversation records match" in again.stdout


def _on_terminal(folder: Path, answer: str, *args: str) -> tuple[int, str]:
    """``keel ARGS`` in a subprocess whose stdin and stdout are a pseudo-terminal; types ``answer``
    once it asks. ``(exit code, everything it printed)``."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "keel", *args],
        cwd=folder,
        env=keel_env(COLUMNS="200"),
        stdin=child,
        stdout=child,
        stderr=child,
        close_fds=True,
    )
    os.close(child)
    seen, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"for good?" in seen:
                os.write(main, answer.encode() + b"\n")
                answered = True
        elif process.poll() is not None:
            break
    code = process.wait(timeout=30)
    os.close(main)
    return code, seen.decode(errors="replace")


def test_on_a_terminal_it_asks_first(folder: Path) -> None:
    code, shown = _on_terminal(folder, "n", "conversations", "delete", "--filter", "metadata.user_id = 'u-42'")
    assert "Erase 3 conversation records for good?" in shown and "nothing erased" in shown and code == 1
    assert _count(folder, "u-42") == 3
    code, shown = _on_terminal(folder, "y", "conversations", "delete", "--filter", "metadata.user_id = 'u-42'")
    assert code == 0 and "erased 3 conversation records" in shown
    assert (_count(folder, "u-42"), _count(folder, "u-7")) == (0, 3)
