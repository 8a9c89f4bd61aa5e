"""``keel verify`` as a user runs it on a workspace whose ``keel.db`` was changed behind keel's back.

The workspace is made once per module and copied for each test (each damages its copy);
the CLI runs in-process (see ``tests/cli_inprocess.py``).
"""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from cli_inprocess import keel, python_in


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A workspace with three finished runs (metric histories, an artifact) and a prompt."""
    import keel as sdk

    folder = tmp_path_factory.mktemp("verify-template")
    assert keel("init", cwd=folder).returncode == 0
    (folder / "eval.json").write_text('{"ok": true}')
    ids = []
    with python_in(folder):
        for i in range(3):
            with sdk.start_run(project="cli", name=f"run-{i}") as run:
                sdk.log_params({"model": f"m{i}", "temperature": 0.7})
                for step in range(20):
                    sdk.log_metric("loss", 1 / (step + 1), step=step)
                sdk.log_artifact("eval.json")
                ids.append(run.id)
        sdk.prompts.register("chat", "Hello {{ name }}", changelog="first")
    return folder, ids


@pytest.fixture
def workspace(template, tmp_path):
    """This test's own copy of the template workspace."""
    folder, ids = template
    copy = tmp_path / "ws"
    shutil.copytree(folder, copy)
    return copy, ids


def _db(folder: Path) -> sqlite3.Connection:
    return sqlite3.connect(folder / ".keel" / "keel.db")


def test_an_untouched_workspace_verifies(workspace):
    folder, _ids = workspace
    out = keel("verify", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 corrupt, 0 missing" in out.stdout
    assert "database (sqlite): integrity_check ok" in out.stdout
    assert "records checked: 3 runs, 1 prompt versions, 0 model versions, 0 reflog entries: 0 damaged" in out.stdout
    report = json.loads(keel("verify", "--json", cwd=folder).stdout)
    assert report["ok"] is True and report["database"]["records"]["runs"]["checked"] == 3
    assert report["database"]["integrity"] == [] and report["database"]["damaged"] == []


def test_a_silently_changed_metric_history_is_reported(workspace):
    folder, ids = workspace
    with _db(folder) as conn:
        pk, vals = conn.execute(
            "SELECT c.id, c.vals FROM metric_chunks c JOIN runs r ON r.id = c.run_pk WHERE r.run_id = ? LIMIT 1",
            (ids[1],),
        ).fetchone()
        conn.execute("UPDATE metric_chunks SET vals = ? WHERE id = ?", (bytes([vals[0] ^ 1]) + vals[1:], pk))

    out = keel("verify", cwd=folder)

    assert out.returncode == 5
    assert f"damaged  run {ids[1][:8]} (project cli)  metrics changed since it finished" in out.stdout
    assert "1 damaged" in out.stdout
    report = json.loads(keel("verify", "--json", cwd=folder).stdout)
    assert report["ok"] is False
    assert report["database"]["damaged"] == [
        {
            "kind": "run",
            "key": ids[1],
            "what": f"run {ids[1][:8]} (project cli)",
            "problem": "metrics changed since it finished",
        }
    ]


def test_runs_from_before_digests_are_not_covered_until_sealed(workspace):
    folder, _ids = workspace
    with _db(folder) as conn:
        conn.execute("UPDATE runs SET digest = NULL")

    out = keel("verify", cwd=folder)
    assert out.returncode == 0, out.stdout
    assert "not covered: 3 runs without a digest" in out.stdout and "--seal" in out.stdout

    sealed = keel("verify", "--seal", cwd=folder)
    assert sealed.returncode == 0 and "sealed: 3 runs" in sealed.stdout
    again = keel("verify", cwd=folder)
    assert "records checked: 3 runs" in again.stdout and "not covered" not in again.stdout


def test_a_damaged_page_is_one_line_and_no_traceback(workspace):
    folder, _ids = workspace
    path = folder / ".keel" / "keel.db"
    with _db(folder) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root, page_size = conn.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size()) FROM sqlite_master "
            "WHERE name = 'ix_params_key_value'"
        ).fetchone()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * 64)

    out = keel("verify", cwd=folder)

    assert out.returncode == 5
    assert "Traceback" not in out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("damaged  database  integrity_check: ")]
    assert len(lines) == 1, out.stdout
    assert "database (sqlite): integrity_check FAILED" in out.stdout
    quick = keel("verify", "--quick", cwd=folder)
    assert quick.returncode == 5 and "quick_check" in quick.stdout
