"""The tracking API end to end, on a SQLite workspace and on PostgreSQL + S3 (fixture ``ws``)."""

import json
import math
import os

import pytest

import keel
from keel.sdk import session as sessions


def test_mlflow_style_with_block(ws):
    (ws / "eval_results.json").write_text(json.dumps({"accuracy": 0.85}))
    rows = [["how do refunds work?", "Within 30 days.", 0.9, "good"], ["hi", "hello", 0.4, "bad"]]
    with keel.start_run(project="llm-prompt-optimization", name="prompt_v1.3_gpt4") as run:
        keel.log_params({"prompt_version": "v1.3", "model": "gpt-4", "temperature": 0.7})
        keel.log_metrics({"accuracy": 0.85, "faithfulness": 0.92})
        keel.log_artifact("eval_results.json")
        run.log_table("eval_samples", columns=["query", "response", "score", "feedback"], rows=rows)
        run.log_text("system_prompt", "You are a helpful support agent.")
    client = keel.Client()
    record = client.get_run(run.id)
    assert record.status == "finished" and record.end_time >= record.start_time
    assert record.project == "llm-prompt-optimization" and record.name == "prompt_v1.3_gpt4"
    assert record.params == {"model": "gpt-4", "prompt_version": "v1.3", "temperature": 0.7}
    assert record.metrics == {"accuracy": 0.85, "faithfulness": 0.92}
    assert client.read_artifact(run.id, "eval_results.json") == (ws / "eval_results.json").read_bytes()
    table = client.table(run.id, "eval_samples")
    assert table.columns == ("query", "response", "score", "feedback")
    assert table.filter("score > 0.5").column("query") == ["how do refunds work?"]
    assert client.text(run.id, "system_prompt") == "You are a helpful support agent."
    assert record.context["python"] and record.context["keel"] == keel.__version__


def test_wandb_style_numbers_are_metrics_others_params(ws):
    # config= is W&B's place for hyperparameters: params (numbers too), flattened like log_params
    keel.init(project="llm-prompt-optimization", config={"temperature": 0.7, "rag": {"top_k": 5}})
    keel.log({"prompt_version": "v1.3", "eval_accuracy": 0.85, "avg_latency_ms": 1200})
    keel.log({"eval_accuracy": 0.87})
    run = keel.active_run()
    keel.finish()
    assert keel.active_run() is None
    record = keel.Client().get_run(run.id)
    assert record.params == {"prompt_version": "v1.3", "rag.top_k": 5, "temperature": 0.7}
    assert record.metrics == {"avg_latency_ms": 1200.0, "eval_accuracy": 0.87}
    history = keel.Client().metric_history(run.id, "eval_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.85), (1, 0.87)]


def test_client_style_and_metric_history(ws):
    client = keel.Client()
    run = client.start_run(project="p", name="loop")
    for step in range(500):
        run.log_metric("loss", 1 / (step + 1), step=step)
    run.log_metric("loss", float("nan"), step=500)
    run.log_metric("odd", float("-inf"))
    run.finish()
    history = client.metric_history(run.id, "loss")
    assert len(history) == 501 and history[0].value == 1.0 and math.isnan(history[-1].value)
    summary = {s.key: s for s in client.metric_summaries(run.id)}
    assert summary["loss"].count == 501 and summary["loss"].min == pytest.approx(1 / 500)
    assert summary["loss"].max == 1.0 and math.isnan(summary["loss"].latest)
    assert summary["odd"].latest == float("-inf")


def test_failed_run_records_the_error(ws):
    with pytest.raises(ZeroDivisionError):
        with keel.start_run(project="p") as run:
            keel.log_metric("x", 1)
            1 / 0  # noqa: B018
    record = keel.Client().get_run(run.id)
    assert record.status == "failed"
    assert record.error.startswith("ZeroDivisionError")
    assert record.metrics == {"x": 1.0}  # what was logged before the error is kept


def test_param_conflicts(ws):
    with keel.start_run(project="p") as run:
        keel.log_param("model", "gpt-4")
        keel.log_param("model", "gpt-4")  # same value: fine
        with pytest.raises(keel.Conflict, match="cannot change it"):
            keel.log_param("model", "gpt-3.5")
        keel.log_param("model", "gpt-4o", overwrite=True)
    assert keel.Client().get_run(run.id).params == {"model": "gpt-4o"}


def test_bad_inputs_raise_clear_errors(ws):
    with keel.start_run(project="p") as run:
        with pytest.raises(keel.InvalidInput, match="non-numeric"):
            run.log_metric("m", "high")
        with pytest.raises(keel.InvalidInput, match="invalid metric key"):
            run.log_metric("bad'key", 1)
        with pytest.raises(keel.InvalidInput, match="not JSON"):
            run.log_param("p", object())
        with pytest.raises(keel.NotFound):
            run.log_artifact("does-not-exist.txt")
    with pytest.raises(keel.InvalidInput, match="invalid project name"):
        keel.start_run(project="bad;name")
    with pytest.raises(keel.InvalidInput, match="no active run"):
        keel.log_metric("x", 1)
    with pytest.raises(keel.NotFound):
        keel.Client().get_run("abcdef12")
    with pytest.raises(keel.InvalidInput, match="invalid run id"):
        keel.Client().get_run("x")


def test_nested_runs_and_lineage(ws):
    with keel.start_run(project="p", name="sweep") as parent:
        with keel.start_run(name="trial-1") as child:
            keel.log_metric("acc", 0.8)
            keel.log_input("prompt:chat@1.3.0", role="prompt")
            (ws / "out.txt").write_text("result")
            oid = keel.log_artifact("out.txt")
        assert keel.active_run() is parent
    client = keel.Client()
    assert client.get_run(child.id).parent_id == parent.id
    assert client.children(parent.id) == [child.id]
    edges = {(e.direction, str(e.entity)) for e in client.lineage(child.id)}
    assert ("input", f"run:{parent.id}") in edges
    assert ("input", "prompt:chat@1.3.0") in edges
    assert ("output", f"artifact:{oid}") in edges
    assert keel.lineage.used_by("prompt:chat@1.3.0") == [child.id]
    assert keel.lineage.used_by("prompt:chat") == [child.id]
    assert keel.lineage.used_by("prompt:chat@2.0.0") == []
    assert keel.lineage.produced_by(f"artifact:{oid}") == [child.id]
    assert keel.lineage.used_by(f"run:{parent.id}") == [child.id]


def test_artifact_directories_dedup_and_download(ws):
    data = ws / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("same")
    (data / "sub" / "b.txt").write_text("same")
    (data / "c.bin").write_bytes(os.urandom(3 << 20))
    with keel.start_run(project="p") as run:
        keel.log_artifacts(data, artifact_path="inputs")
    client = keel.Client()
    items = client.list_artifacts(run.id)
    assert [a.path for a in items] == ["inputs/a.txt", "inputs/c.bin", "inputs/sub/b.txt"]
    assert items[0].oid == items[2].oid  # identical content, one object
    if (ws / ".keel").exists():
        objects = [p for p in (ws / ".keel" / "objects").rglob("*") if p.is_file() and p.parent.name != "tmp"]
        assert len(objects) == 2
    assert [a.path for a in client.list_artifacts(run.id, "inputs/sub")] == ["inputs/sub/b.txt"]
    written = client.download_artifacts(run.id, "inputs", ws / "restored")
    assert sorted(p.relative_to(ws / "restored").as_posix() for p in written) == ["a.txt", "c.bin", "sub/b.txt"]
    assert (ws / "restored" / "c.bin").read_bytes() == (data / "c.bin").read_bytes()
    one = client.download_artifacts(run.id, "inputs/sub/b.txt", ws / "single")
    assert one == [ws / "single" / "b.txt"]


def test_search_filter_order_and_pages(ws):
    client = keel.Client()
    for i in range(30):
        run = client.start_run(project="search", name=f"r{i}", tags={"team": "search" if i % 2 else "chat"})
        run.log_params({"model": "gpt-4" if i % 3 else "gpt-3.5", "temperature": i / 10})
        run.log_metrics({"accuracy": i / 30, "cost_per_query": (30 - i) / 100})
        run.finish()
    found = keel.search_runs(
        "search",
        filter="metrics.accuracy > 0.5 and params.model = 'gpt-4' and tags.team = 'search'",
        order_by=["metrics.cost_per_query asc"],
    )
    names = [r.name for r in found]
    expected = [f"r{i}" for i in range(29, 15, -1) if i % 3 and i % 2]
    assert names == expected
    assert found.to_rows()[0]["metrics.accuracy"] == pytest.approx(29 / 30)
    assert [r.name for r in keel.search_runs("search", filter="params.temperature >= 2.8")] == ["r29", "r28"]
    page1 = client.search_runs("search", order_by="metrics.accuracy desc", limit=12)
    page2 = client.search_runs("search", order_by="metrics.accuracy desc", limit=12, page_token=page1.next_page_token)
    page3 = client.search_runs("search", order_by="metrics.accuracy desc", limit=12, page_token=page2.next_page_token)
    assert page3.next_page_token is None
    assert [r.name for r in page1 + page2 + page3] == [f"r{i}" for i in range(29, -1, -1)]
    with pytest.raises(keel.FilterSyntaxError):
        keel.search_runs("search", filter="metrics.accuracy >>> 1")
    with pytest.raises(keel.NotFound, match="no project"):
        keel.search_runs("nope")
    with pytest.raises(keel.InvalidInput, match="compare with numbers"):
        keel.search_runs("search", filter="metrics.accuracy = 'high'")


def test_delete_restore_and_prefix_ids(ws):
    client = keel.Client()
    run = client.start_run(project="p")
    run.finish()
    client.delete_run(run.id[:6])
    assert client.search_runs("p") == []
    assert [r.run_id for r in client.search_runs("p", only_deleted=True)] == [run.id]
    client.restore_run(run.id[:6])
    assert [r.run_id for r in client.search_runs("p")] == [run.id]


def test_resume_run_keeps_params_immutable(ws):
    with keel.start_run(project="p") as run:
        keel.log_param("model", "gpt-4")
    with keel.start_run(run_id=run.id) as again:
        with pytest.raises(keel.Conflict):
            keel.log_param("model", "other")
        keel.log_metric("late", 1.0)
    assert again.id == run.id
    assert keel.Client().get_run(run.id).metrics == {"late": 1.0}


def test_zero_setup_creates_a_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_URI", raising=False)
    try:
        with keel.start_run(project="p") as run:
            keel.log_metric("m", 1)
        assert (tmp_path / ".keel" / "keel.db").exists()
        assert keel.Client().get_run(run.id).metrics == {"m": 1.0}
    finally:
        sessions.reset()


def test_keel_uri_selects_another_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KEEL_URI", f"sqlite:///{tmp_path}/elsewhere/meta.db")
    (tmp_path / "elsewhere").mkdir()
    try:
        with keel.start_run(project="p") as run:
            keel.log_text("note", "hi")
        assert not (tmp_path / ".keel").exists()
        assert (tmp_path / "elsewhere" / "objects").is_dir()
        assert keel.Client().text(run.id, "note") == "hi"
    finally:
        sessions.reset()


def test_tags_and_metrics_logged_after_the_first_write_show_in_reads_and_search(ws):
    client = keel.Client()
    run = client.start_run(project="late", tags={"stage": "draft"})
    run.log_metric("acc", 0.5, step=0)
    run.flush()  # the run's row is written; what follows merges into it
    run.set_tag("stage", "final")
    run.log_metric("acc", 0.9, step=1)
    run.log_metric("acc", 0.1, step=0)  # an older step: not the latest
    run.log_param("model", "gpt-4o")
    run.finish()
    record = client.get_run(run.id)
    assert record.tags == {"stage": "final"}
    assert record.metrics == {"acc": 0.9} and record.params == {"model": "gpt-4o"}
    found = client.search_runs("late", filter="tags.stage = 'final' and metrics.acc > 0.8")
    assert [r.run_id for r in found] == [run.id] and found[0].metrics == {"acc": 0.9}
