"""Progress bars of the CLI: on a terminal's stderr for work that lasts, never when piped or with --json.

The commands run in-process (``keel.cli.main.main``) with the bar's delay at 0, so
even this small work would show one: what decides is only where stderr goes.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from keel.cli import progress as cli_progress
from keel.cli.main import main
from keel.core import progress as core_progress

BAR_CHARACTERS = ("━", "╸", "╺", "\x1b[", "\r")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from keel.sdk import session
    from keel.sdk.workspace import init_workspace

    monkeypatch.setattr(cli_progress, "DELAY", 0.0)  # any work at all would show a bar on a terminal
    monkeypatch.setattr(core_progress, "INTERVAL", 0.0)
    root = tmp_path
    init_workspace(root)
    (root / "data" / "set").mkdir(parents=True)
    for i in range(200):
        (root / "data" / "set" / f"f{i:03d}.txt").write_bytes(os.urandom(8_000))
    (root / "data" / "big.bin").write_bytes(os.urandom(2 << 20))
    docs = root / "docs"
    docs.mkdir()
    for i in range(30):
        (docs / f"d{i}.md").write_text(f"# Doc {i}\n\n" + "Refunds take five days. " * 60)
    yield root
    session.reset()


def _terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    terminal = FakeTerminal()
    monkeypatch.setattr(cli_progress, "_terminal", lambda: terminal)
    return terminal


def test_piped_output_holds_no_progress_bar(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "add", "data/set", "data/big.bin"]) == 0
    assert main(["kb", "create", "docs"]) == 0
    assert main(["kb", "add", "docs", "docs"]) == 0
    assert main(["kb", "commit", "docs", "-m", "first"]) == 0
    (workspace / "data" / "big.bin").unlink()
    assert main(["data", "checkout"]) == 0
    out = capsys.readouterr()
    assert "updated   data/big.bin.keel" in out.out and "committed docs@v1" in out.out
    for text in (out.out, out.err):
        assert not any(c in text for c in BAR_CHARACTERS), repr(text[:500])


def test_a_terminal_shows_the_bar_of_data_add_and_checkout(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _terminal(monkeypatch)
    assert main(["data", "add", "data/set", "data/big.bin"]) == 0
    shown = terminal.getvalue()
    assert "data add" in shown and "━" in shown and "MiB/" in shown
    assert "updated   data/big.bin.keel" in capsys.readouterr().out  # the summary is on stdout, as before

    terminal.truncate(0)
    (workspace / "data" / "big.bin").unlink()
    assert main(["data", "checkout"]) == 0
    assert "data checkout" in terminal.getvalue() and "1/1 files" in terminal.getvalue()


def test_a_terminal_shows_the_steps_of_kb_add_and_commit(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["kb", "create", "docs", "--chunk-size", "200"]) == 0
    terminal = _terminal(monkeypatch)
    assert main(["kb", "add", "docs", "docs"]) == 0
    assert "reading" in terminal.getvalue() and "30/30 documents" in terminal.getvalue()
    terminal.truncate(0)
    assert main(["kb", "commit", "docs", "-m", "first"]) == 0
    shown = terminal.getvalue()
    assert "chunking" in shown and "30/30 documents" in shown
    assert "embedding" in shown and "chunks" in shown


def test_json_output_never_comes_with_a_bar(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _terminal(monkeypatch)
    assert main(["data", "add", "data/set", "--json"]) == 0
    assert main(["kb", "create", "docs", "--json"]) == 0
    assert main(["kb", "add", "docs", "docs", "--json"]) == 0
    capsys.readouterr()
    assert main(["kb", "commit", "docs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["document_count"] == 30
    assert terminal.getvalue() == ""
