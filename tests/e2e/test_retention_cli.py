"""``keel runs purge``, ``keel runs delete --purge`` and ``keel retention`` as an operator runs
them: a count first, refused without a terminal unless ``--yes``, ``--dry-run`` only counts,
refusals in one line with a non-zero exit and nothing removed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inprocess import keel, python_in


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    assert keel("init", cwd=tmp_path).returncode == 0
    return tmp_path


def _runs(folder: Path, n: int, project: str = "default") -> list[str]:
    ids = []
    with python_in(folder):
        import keel as api

        for i in range(n):
            with api.start_run(project=project) as run:
                api.log_metric("loss", 0.5)
                api.log_text("notes", f"notes of run {i}")
                ids.append(run.id)
    return ids


def _listed(folder: Path) -> set[str]:
    out = keel("runs", "list", "--json", cwd=folder)
    assert out.returncode == 0, out.stderr
    return {r["run_id"] for r in json.loads(out.stdout)["runs"]}


def test_purge_counts_asks_and_removes_deleted_runs_for_good(folder: Path) -> None:
    first, second, live = _runs(folder, 3)
    assert keel("runs", "delete", first, second, cwd=folder).returncode == 0

    plan = keel("runs", "purge", "--dry-run", cwd=folder)
    assert plan.returncode == 0 and "2 deleted runs match (dry run: nothing removed)" in plan.stdout
    refused = keel("runs", "purge", cwd=folder)  # no terminal to ask on
    assert refused.returncode != 0 and "--yes" in refused.stderr
    not_deleted = keel("runs", "purge", live, "--yes", cwd=folder)
    assert not_deleted.returncode != 0 and "is not deleted" in not_deleted.stderr
    assert len(not_deleted.stderr.strip().splitlines()) == 1
    assert keel("runs", "restore", first, cwd=folder).returncode == 0
    assert keel("runs", "delete", first, cwd=folder).returncode == 0  # still restorable before the purge

    done = keel("runs", "purge", "--older-than", "1m", "--yes", cwd=folder)
    assert done.returncode == 0 and "no deleted run matches: nothing purged" in done.stdout  # deleted just now
    done = keel("runs", "purge", "--yes", "--json", cwd=folder)
    report = json.loads(done.stdout)
    assert (report["kind"], report["matched"], report["deleted"]) == ("runs", 2, 2)
    assert report["objects_removed"] == 2  # each run's notes.txt: nothing else references them
    assert _listed(folder) == {live}
    gone = keel("runs", "restore", first, cwd=folder)
    assert gone.returncode != 0
    audit = json.loads(keel("erasures", "list", "--json", cwd=folder).stdout)
    assert [(e["kind"], e["reason"], e["deleted"]) for e in audit] == [("runs", "purge", 2)]


def test_delete_with_purge_in_one_step(folder: Path) -> None:
    run, other = _runs(folder, 2)
    done = keel("runs", "delete", "--purge", run[:8], "--yes", cwd=folder)
    assert done.returncode == 0 and "purged 1 runs" in done.stdout
    assert keel("runs", "show", run, cwd=folder).returncode != 0
    assert keel("runs", "show", other, cwd=folder).returncode == 0
    refused = keel("runs", "delete", "--purge", other, cwd=folder)  # no terminal, no --yes: nothing happens
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert other in _listed(folder)
    with python_in(folder):
        from keel.sdk import models

        models.register("chat-model", f"runs:/{other}/notes.txt")
    versioned = keel("runs", "delete", "--purge", other, "--yes", cwd=folder)  # refused: left as it was
    assert versioned.returncode != 0 and "model version chat-model v1" in versioned.stderr
    assert other in _listed(folder)  # not even soft-deleted


def test_retention_set_show_unset_apply(folder: Path) -> None:
    assert keel("retention", "show", cwd=folder).stdout.strip() == "no retention policy: everything is kept"
    done = keel("retention", "set", "--kind", "conversations", "--max-age", "30d", cwd=folder)
    assert done.returncode == 0 and "conversations in @registries: kept 30d" in done.stdout
    assert keel("retention", "set", "--kind", "traces", "--max-age", "12w", cwd=folder).returncode == 0
    shown = json.loads(keel("retention", "show", "--json", cwd=folder).stdout)
    assert {(p["kind"], p["project"], p["max_age"]) for p in shown} == {
        ("conversations", "@registries", "30d"),
        ("traces", "default", "12w"),
    }
    wrong = keel("retention", "set", "--kind", "runs", "--max-age", "30d", cwd=folder)
    assert wrong.returncode != 0 and "never expire" in wrong.stderr
    scoped = keel("retention", "set", "--kind", "llm_calls", "--max-age", "30d", "--project", "x", cwd=folder)
    assert scoped.returncode != 0 and "workspace-wide" in scoped.stderr

    plan = keel("retention", "apply", "--dry-run", cwd=folder)
    assert plan.returncode == 0 and "conversations: 0 would expire (dry run)" in plan.stdout
    applied = json.loads(keel("retention", "apply", "--json", cwd=folder).stdout)
    assert {r["kind"] for r in applied} == {"conversations", "traces"}
    assert keel("retention", "unset", "--kind", "traces", cwd=folder).returncode == 0
    assert len(json.loads(keel("retention", "show", "--json", cwd=folder).stdout)) == 1
