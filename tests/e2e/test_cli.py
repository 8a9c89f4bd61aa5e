"""The ``keel`` command as a user runs it, on a real workspace.

The commands run in-process through the script's entry point (``tests/cli_inprocess.py``);
what only a real process shows (start-up time, the exit code reaching the shell) runs the
installed ``keel`` script. Read-only tests share one workspace; tests that change it get
their own.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_inprocess import keel as run_keel
from cli_inprocess import keel_env, python_in

KEEL = Path(sys.executable).with_name("keel")


def keel(*args, cwd, check=True):
    out = run_keel(*args, cwd=cwd)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


def keel_process(*args, cwd):
    """The installed ``keel`` script in a subprocess."""
    return subprocess.run([str(KEEL), *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=keel_env())


def _make_project(folder: Path) -> tuple[Path, list[str]]:
    """``keel init``, then three runs logged through the Python API; their ids."""
    import keel as sdk

    assert keel("init", cwd=folder).stdout.startswith("Initialized keel workspace")
    (folder / "eval.json").write_text('{"ok": true}')
    ids = []
    with python_in(folder):
        runs = [("gpt-4", 0.85, 0.03), ("gpt-4o", 0.9, 0.01), ("llama-3", 0.7, 0.001)]
        for i, (model, acc, cost) in enumerate(runs):
            with sdk.start_run(project="cli", name=f"run-{i}", tags={"team": "search"}) as run:
                sdk.log_params({"model": model, "temperature": 0.7})
                sdk.log_metrics({"accuracy": acc, "cost_per_query": cost})
                sdk.log_artifact("eval.json", artifact_path="eval")
                ids.append(run.id)
    return folder, ids


@pytest.fixture(scope="module")
def shared_project(tmp_path_factory):
    """A workspace with three runs, for tests that only read it."""
    return _make_project(tmp_path_factory.mktemp("cli"))


@pytest.fixture
def project(tmp_path):
    """A workspace with three runs of this test's own, for tests that change it."""
    return _make_project(tmp_path)


def test_help_is_fast_and_lists_commands(tmp_path):
    start = time.perf_counter()
    out = keel_process("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert elapsed < 1.0, f"keel --help took {elapsed:.2f}s"
    for command in ("init", "runs", "artifacts", "verify"):
        assert command in out.stdout
    assert keel("--version", cwd=tmp_path).stdout.startswith("keel ")


def test_runs_list_filter_sort_json(shared_project):
    folder, ids = shared_project
    out = keel(
        "runs",
        "list",
        "--project",
        "cli",
        "--filter",
        "metrics.accuracy > 0.8",
        "--sort",
        "metrics.cost_per_query asc",
        "--json",
        cwd=folder,
    )
    runs = json.loads(out.stdout)["runs"]
    assert [r["name"] for r in runs] == ["run-1", "run-0"]
    table = keel("runs", "list", cwd=folder).stdout
    assert "run-2" in table and ids[2][:8] in table


def test_runs_show_and_compare(shared_project):
    folder, ids = shared_project
    shown = keel("runs", "show", ids[0][:6], cwd=folder).stdout
    assert ids[0] in shown and "gpt-4" in shown and "eval/eval.json" in shown
    doc = json.loads(keel("runs", "show", ids[0], "--json", cwd=folder).stdout)
    assert doc["params"] == {"model": "gpt-4", "temperature": 0.7}
    compared = json.loads(keel("runs", "compare", ids[0], ids[1], "--json", cwd=folder).stdout)
    differs = {row["key"]: row["differs"] for row in compared["rows"]}
    assert differs == {
        "params.model": True,
        "params.temperature": False,
        "metrics.accuracy": True,
        "metrics.cost_per_query": True,
    }
    text = keel("runs", "compare", ids[0], ids[1], cwd=folder).stdout
    assert "3 of 4 values differ" in text


def test_delete_restore(project):
    folder, ids = project
    keel("runs", "delete", ids[0][:8], cwd=folder)
    listed = json.loads(keel("runs", "list", "--json", cwd=folder).stdout)["runs"]
    assert ids[0] not in [r["run_id"] for r in listed]
    deleted = json.loads(keel("runs", "list", "--deleted", "--json", cwd=folder).stdout)["runs"]
    assert [r["run_id"] for r in deleted] == [ids[0]]
    keel("runs", "restore", ids[0][:8], cwd=folder)
    assert len(json.loads(keel("runs", "list", "--json", cwd=folder).stdout)["runs"]) == 3


def test_artifacts_list_get_and_lineage(shared_project):
    folder, ids = shared_project
    listed = json.loads(keel("artifacts", "list", ids[1], "--json", cwd=folder).stdout)
    assert [a["path"] for a in listed] == ["eval/eval.json"]
    keel("artifacts", "get", ids[1], "eval/eval.json", "--dest", "out", cwd=folder)
    assert (folder / "out" / "eval.json").read_text() == '{"ok": true}'
    lineage = json.loads(keel("runs", "lineage", ids[1], "--json", cwd=folder).stdout)
    assert lineage["outputs"][0]["entity"].startswith("artifact:")


def test_verify_reports_corruption_with_exit_code(project):
    folder, _ids = project
    assert "0 corrupt" in keel("verify", cwd=folder).stdout
    objects = [p for p in (folder / ".keel" / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp"]
    victim = objects[0]
    os.chmod(victim, 0o644)
    victim.write_bytes(b"garbage")
    out = keel("verify", cwd=folder, check=False)
    assert out.returncode == 5
    assert "corrupt" in out.stdout and str(victim) in out.stdout


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("runs", "show", "ffff0000"), 3, "no run with id"),
        (("runs", "show", "zz"), 2, "invalid run id"),
        (("runs", "list", "--filter", "metrics.accuracy >"), 2, "position 18"),
        (("runs", "list", "--project", "nope"), 3, "no project 'nope'"),
        (("runs", "compare", "abcd"), 2, "at least two runs"),
        (("init",), 4, "already"),
    ],
)
def test_errors_are_one_line_without_traceback(shared_project, args, code, needle):
    folder, _ids = shared_project
    out = keel(*args, cwd=folder, check=False)
    assert out.returncode == code
    assert needle in out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_no_workspace_is_a_clear_error(tmp_path):
    out = keel_process("runs", "list", cwd=tmp_path)  # the exit code reaches the shell
    assert out.returncode == 2 and "keel init" in out.stderr and "Traceback" not in out.stderr


def test_newer_schema_is_refused_clearly(project):
    import sqlite3

    folder, _ids = project
    with sqlite3.connect(folder / ".keel" / "keel.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    out = keel("runs", "list", cwd=folder, check=False)
    assert out.returncode != 0 and "newer than this keel" in out.stderr and "Traceback" not in out.stderr
