"""The ``keel`` command as a user runs it: real processes, real workspace."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

KEEL = Path(sys.executable).with_name("keel")


def keel(*args, cwd, check=True):
    out = subprocess.run([str(KEEL), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out


@pytest.fixture
def project(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
    assert keel("init", cwd=tmp_path).stdout.startswith("Initialized keel workspace")
    (tmp_path / "eval.json").write_text('{"ok": true}')
    code = """
        import keel
        for i, (model, acc, cost) in enumerate([("gpt-4", 0.85, 0.03), ("gpt-4o", 0.9, 0.01), ("llama-3", 0.7, 0.001)]):
            with keel.start_run(project="cli", name=f"run-{i}", tags={"team": "search"}) as run:
                keel.log_params({"model": model, "temperature": 0.7})
                keel.log_metrics({"accuracy": acc, "cost_per_query": cost})
                keel.log_artifact("eval.json", artifact_path="eval")
                print(run.id)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    return tmp_path, out.stdout.split()


def test_help_is_fast_and_lists_commands(tmp_path):
    start = time.perf_counter()
    out = keel("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"keel --help took {elapsed:.2f}s"
    for command in ("init", "runs", "artifacts", "verify"):
        assert command in out.stdout
    assert keel("--version", cwd=tmp_path).stdout.startswith("keel ")


def test_runs_list_filter_sort_json(project):
    folder, ids = project
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


def test_runs_show_and_compare(project):
    folder, ids = project
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


def test_artifacts_list_get_and_lineage(project):
    folder, ids = project
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
def test_errors_are_one_line_without_traceback(project, args, code, needle):
    folder, _ids = project
    out = keel(*args, cwd=folder, check=False)
    assert out.returncode == code
    assert needle in out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr


def test_no_workspace_is_a_clear_error(tmp_path):
    out = keel("runs", "list", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "keel init" in out.stderr and "Traceback" not in out.stderr


def test_newer_schema_is_refused_clearly(project):
    import sqlite3

    folder, _ids = project
    with sqlite3.connect(folder / ".keel" / "keel.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    out = keel("runs", "list", cwd=folder, check=False)
    assert out.returncode != 0 and "newer than this keel" in out.stderr and "Traceback" not in out.stderr
