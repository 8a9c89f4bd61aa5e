"""``keel gc`` on real stores (SQLite + a local folder, PostgreSQL + S3): it removes exactly the
objects nothing references, and every read of every writer's content still works afterwards."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import keel
from keel.core.hashing import hash_bytes
from keel.integrations.standin import StandInServer
from keel.meta import references
from keel.sdk import admin, llm
from keel.sdk import config as keel_config
from keel.sdk import data as keel_data
from keel.sdk import kb as kbs
from keel.sdk import session as sessions
from keel.services import gc
from keel.services.traces import INLINE_PAYLOAD_BYTES, TraceService
from keel.services.verify import verify_store
from keel.services.workspace import Store

FUTURE = 3600.0  # collect "an hour from now", so every object counts as old (S3 cannot be back-dated)


@pytest.fixture
def standin() -> Iterator[StandInServer]:
    with StandInServer() as running:
        yield running


def _store() -> Store:
    return sessions.get_session().service.store  # type: ignore[no-any-return]


def _add_and_push(ws: Path, paths: list[str]) -> list[str]:
    """``keel data add`` then ``keel data push`` to the store's own objects (a team's data remote
    may be its bucket: the versions are registered in its database); the versions' oids."""
    if os.environ.get("KEEL_URI"):
        from keel.services.workspace import init_workspace

        if not (ws / ".keel").exists():
            init_workspace(ws, os.environ["KEEL_URI"], os.environ["KEEL_OBJECTS"])
    added = keel_data.add(paths, root=ws)
    remote = os.environ.get("KEEL_OBJECTS") or str(ws / ".keel" / "objects")
    keel_data.add_remote("origin", remote, root=ws, force=True)
    keel_data.push(root=ws)
    return [result.oid for result in added]


def _write_everything(ws: Path, standin: StandInServer) -> dict[str, object]:
    """Content from every writer keel has; what to read back afterwards."""
    out: dict[str, object] = {}
    # run artifacts (a file, a folder, text)
    (ws / "model.bin").write_bytes(os.urandom(3000))
    (ws / "reports").mkdir()
    (ws / "reports" / "a.txt").write_text("report a")
    (ws / "reports" / "b.txt").write_text("report b")
    with keel.start_run(project="gc") as run:
        run.log_artifact(ws / "model.bin")
        run.log_artifacts(ws / "reports", "reports")
        run.log_text("notes", "kept by gc")
        cfg_dir = ws / "config"
        cfg_dir.mkdir()
        (cfg_dir / "production.yaml").write_text("llm:\n  model: gpt-4o\n")
        cfg = keel_config.load(env="production", directory=cfg_dir)  # a configuration snapshot
    out["run"] = run.id
    out["config"] = cfg.snapshot_hash
    # tracked data: a folder of small files (packs and a tree) and a large file
    folder = ws / "data" / "corpus"
    folder.mkdir(parents=True)
    for i in range(40):
        (folder / f"f{i:02d}.txt").write_text(f"file {i} " * 20)
    (ws / "data" / "big.bin").write_bytes(os.urandom(300_000))
    _add_and_push(ws, ["data/corpus", "data/big.bin"])
    # a knowledge base version (documents, manifest, chunk table, index, embeddings)
    kb = kbs.create("docs", chunk_size=200, chunk_overlap=0)
    kb.add_documents([{"text": f"Refunds take {i} days. " * 10, "source": f"d{i}.md"} for i in range(5)])
    kb.commit("v1")
    kb.add_documents([{"text": "Staged, not committed yet. " * 5, "source": "staged.md"}])
    # recorded LLM calls
    client = openai.OpenAI(base_url=standin.base_url, api_key="standin", max_retries=0)
    wrapped = llm.wrap(client, trace=False)
    with keel.start_run(project="gc") as recorded:
        answer = wrapped.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "2+2?"}])
    llm.flush()
    client.close()
    out["llm_run"] = recorded.id
    out["answer"] = answer.choices[0].message.content
    # a trace whose payload is offloaded to the object store
    traces = TraceService(_store())
    big = {"text": "y" * (INLINE_PAYLOAD_BYTES + 10)}
    start = time.time_ns()
    traces.ingest(
        [
            {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "name": "answer",
                "start_ns": start,
                "end_ns": start + 1000,
                "status": "ok",
                "outputs": big,
            }
        ],
        "gc",
    )
    out["payload"] = big
    return out


def _read_everything(ws: Path, written: dict[str, object], standin: StandInServer) -> None:
    """Every read of what :func:`_write_everything` stored (raises if an object is gone)."""
    run_id = str(written["run"])
    client = keel.Client()
    assert client.text(run_id, "notes") == "kept by gc"
    arts = client.list_artifacts(run_id)
    assert len(arts) == 5  # model.bin, two reports, the text, the config snapshot
    for art in arts:
        client.read_artifact(run_id, art.path)
    assert len(client.download_artifacts(run_id, "", ws.parent / f"{ws.name}-download")) == 5
    assert keel_config.snapshot(str(written["config"]))[1]["llm"]["model"] == "gpt-4o"
    checked, problems = keel_data.verify(root=ws)
    assert checked > 0 and problems == []
    kb = kbs.get("docs")
    assert kb.search("refunds", top_k=2)
    kb.export(ws.parent / f"{ws.name}-kb.jsonl")
    assert kb.status().added == ["staged.md"]
    assert kb.commit("v2").document_count == 6  # reads the staged document's object
    client_ = openai.OpenAI(base_url=standin.base_url, api_key="standin", max_retries=0)
    replay = llm.wrap(client_, mode="replay", replay_from=str(written["llm_run"]), trace=False)
    again = replay.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "2+2?"}])
    client_.close()
    assert again.choices[0].message.content == written["answer"]
    traces = TraceService(_store())
    assert traces.payload("a" * 32, "b" * 16, "outputs", "gc") == written["payload"]
    report = verify_store(_store(), database=False)
    assert report.ok, report.to_dict()


def test_gc_removes_exactly_the_unreferenced_objects_and_every_read_still_works(
    ws: Path, standin: StandInServer
) -> None:
    written = _write_everything(ws, standin)
    store = _store()
    junk = [store.objects.put_bytes(f"nobody references {i}".encode()) for i in range(5)]
    before = {info.oid for info in store.objects.iter_objects()}

    preview = gc.collect(store, grace_s=0, dry_run=True, now=time.time() + FUTURE)
    assert preview.removed == 5 and sorted(preview.removed_oids) == sorted(junk)
    assert {info.oid for info in store.objects.iter_objects()} == before  # a dry run removes nothing

    report = gc.collect(store, grace_s=0, now=time.time() + FUTURE)
    assert sorted(report.removed_oids) == sorted(junk)
    assert report.bytes_freed == sum(len(f"nobody references {i}") for i in range(5))
    assert report.listed == len(before) and report.referenced == len(before) - 5
    assert {info.oid for info in store.objects.iter_objects()} == before - set(junk)
    for source in (
        "artifacts.oid",
        "dataset_versions.oid",
        "llm_calls.oid",
        "kb_versions.manifest_oid",
        "kb_staged.document_oid",
        "kb_embeddings.pack_oid",
        "config_snapshots.hash",
        "spans.outputs",
    ):
        assert report.by_source[source] > 0, source
    _read_everything(ws, written, standin)
    assert gc.collect(store, grace_s=0, now=time.time() + FUTURE).removed == 0


def test_the_grace_period_keeps_young_unreferenced_objects(ws: Path) -> None:
    store = _store()
    young = store.objects.put_bytes(b"just written, not referenced yet")
    report = gc.collect(store)  # the default hour
    assert report.removed == 0 and report.kept_young >= 1 and store.objects.exists(young)
    report = gc.collect(store, grace_s=0, now=time.time() + FUTURE)
    assert report.removed_oids == [young] and not store.objects.exists(young)


def test_referenced_answers_for_given_oids_through_rows_and_trees(ws: Path) -> None:
    folder = ws / "data" / "set"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"small file {i}")
    tree = _add_and_push(ws, ["data/set"])[0]
    with keel.start_run(project="gc") as run:
        run.log_text("t", "an artifact")
    store = _store()
    artifact = keel.Client().list_artifacts(run.id)[0].oid
    nobody = store.objects.put_bytes(b"nobody")
    packs = {info.oid for info in store.objects.iter_objects()} - {tree, artifact, nobody}
    found = gc.referenced(store, [artifact, tree, nobody, *packs])
    assert found == {artifact, tree, *packs}


def test_sdk_and_cli_entry_points(ws: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli.main import app

    store = _store()
    oid = store.objects.put_bytes(b"orphan")
    assert admin.gc(dry_run=True, grace=0).removed >= 0
    result = CliRunner().invoke(app, ["gc", "--grace", "0", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["dry_run"] is True and store.objects.exists(oid)
    result = CliRunner().invoke(app, ["gc", "--grace", "nonsense"])
    assert result.exit_code != 0 and "grace period" in str(result.exception)


def test_gc_against_a_keel_server_says_where_to_run_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.errors import InvalidInput

    monkeypatch.setenv("KEEL_URI", "http://127.0.0.1:9")
    with pytest.raises(InvalidInput) as err:
        admin.gc(dry_run=True)
    assert "--store" in err.value.hint


def test_pins_keep_objects_pushed_to_a_server(ws: Path) -> None:
    store = _store()
    pushed = store.objects.put_bytes(b"a data file a client pushed")
    gc.pin_pushed(store, [pushed, pushed])
    with store.db.read() as conn:
        assert references.referenced_among(conn, [pushed])["object_pins.oid"] == {pushed}
    assert gc.collect(store, grace_s=0, now=time.time() + FUTURE).removed == 0
    assert store.objects.exists(pushed) and hash_bytes(b"x") not in gc.referenced(store, [hash_bytes(b"x")])
