"""The model registry through ``keel.models``, on SQLite and on PostgreSQL + S3."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import keel
from keel.sdk.models import load_card

CARD = """\
model:
  name: chat-assistant
  version: 3
  base_model: meta-llama/Llama-3-8B-Instruct
  quantization: AWQ-4bit
training:   {dataset: custom_instructions_v2, epochs: 3, learning_rate: 2e-5}
evaluation: {accuracy: 0.85, latency_p95_ms: 150, hallucination_rate: 0.03}
deployment: {stage: production, serving_framework: vllm, gpu: A100-40GB, replicas: 2}
"""


def _tick() -> int:
    """Now in ms, strictly after every earlier write (reflog times are ms)."""
    time.sleep(0.005)
    now = int(time.time() * 1000)
    time.sleep(0.005)
    return now


def _run_with_artifact(tmp: Path) -> str:
    (tmp / "model_config.yaml").write_text("base_model: llama-3-8b\n")
    with keel.start_run(project="chat") as run:
        keel.log_params({"model_name": "llama-3-8b", "quantization": "AWQ-4bit", "fine_tune_dataset": "custom_v2"})
        keel.log_metrics({"eval_accuracy": 0.85, "eval_latency_ms": 120, "eval_cost_per_1k": 0.002})
        keel.log_artifact("model_config.yaml")
    return run.id


def test_the_mlflow_style_workflow_from_the_issue(ws):
    (ws / "model_config.yaml").write_text("base_model: llama-3-8b\n")
    with keel.start_run(project="chat") as run:
        keel.log_params({"model_name": "llama-3-8b", "quantization": "AWQ-4bit", "fine_tune_dataset": "custom_v2"})
        keel.log_metrics({"eval_accuracy": 0.85, "eval_latency_ms": 120, "eval_cost_per_1k": 0.002})
        keel.log_artifact("model_config.yaml")  # still queued: register_model must see it
        mv = keel.register_model(model_uri=f"runs:/{run.id}/model_config.yaml", name="chat-assistant")
    assert (mv.name, mv.version, mv.stage, mv.run_id) == ("chat-assistant", 1, "None", run.id)
    keel.models.transition_stage("chat-assistant", version=mv.version, stage="Production", archive_existing=True)
    keel.models.set_alias("chat-assistant", "champion", mv.version)
    for got in (
        keel.models.get("chat-assistant", stage="Production"),
        keel.models.get("chat-assistant", alias="champion"),
        keel.models.get("chat-assistant", version=1),
        keel.models.get("chat-assistant@champion"),
        keel.models.get("chat-assistant"),
    ):
        assert got.version == 1 and got.stage == "Production" and got.aliases == ("champion",)
    # The run lists the version as its output; lineage walks back to params and metrics.
    assert keel.lineage.produced_by("model:chat-assistant@1") == [run.id]
    lineage = keel.models.lineage("chat-assistant", 1)
    assert lineage.run is not None and lineage.run.params["quantization"] == "AWQ-4bit"
    assert lineage.run.metrics["eval_accuracy"] == 0.85


def test_versions_count_up_per_model_and_sources_may_be_external(ws):
    a = keel.models.register("embedder", "hf://sentence-transformers/all-MiniLM-L6-v2")
    b = keel.models.register("embedder", "s3://models/embedder/v2", description="distilled")
    c = keel.models.register("ranker", "/models/ranker.onnx")
    assert (a.version, b.version, c.version) == (1, 2, 1)
    assert [v.version for v in keel.models.versions("embedder")] == [2, 1]
    assert keel.models.get("embedder").source == "s3://models/embedder/v2"
    assert {m.name: m.latest_version for m in keel.models.list_models()} == {"embedder": 2, "ranker": 1}
    copy = keel.models.register("embedder-prod", "models:/embedder/1")
    assert copy.source == a.source


def test_registering_inside_a_run_links_external_sources_to_it(ws):
    with keel.start_run(project="chat") as run:
        keel.prompts.register("chat", template="Q: {{ q }}", changelog="first")
        keel.prompts.load("chat")
        mv = keel.models.register("chat-ft", "hf://org/chat-ft")
    assert mv.run_id == run.id
    inputs = [str(e.entity) for e in keel.models.lineage("chat-ft", 1).inputs]
    assert inputs == ["prompt:chat@1.0.0"]
    assert [v.ref for v in keel.models.versions_of_run(run.id)] == ["chat-ft@1"]


def test_getting_a_model_inside_a_run_records_it_as_an_input(ws):
    keel.models.register("chat-ft", "hf://org/chat-ft")
    keel.models.set_alias("chat-ft", "champion", 1)
    with keel.start_run(project="eval") as run:
        keel.models.get("chat-ft", alias="champion")
    assert keel.lineage.used_by("model:chat-ft@1") == [run.id]


def test_stages_archive_existing_and_history(ws):
    for i in range(3):
        keel.models.register("m", f"hf://org/m-{i}")
    keel.models.transition_stage("m", 1, "production")
    keel.models.transition_stage("m", 2, "Production")  # no archive: both are in Production
    assert keel.models.versions_in_stage("m", "Production") == [2, 1]
    assert keel.models.get("m", stage="Production").version == 2
    moved = keel.models.transition_stage("m", 3, "Production", archive_existing=True, reason="+4% accuracy")
    assert moved.stage == "Production"
    assert {v.version: v.stage for v in keel.models.versions("m")} == {3: "Production", 2: "Archived", 1: "Archived"}
    history = keel.models.history("m")
    assert [(h.ref, h.old, h.new) for h in history] == [
        ("stage:1", "None", "Production"),
        ("stage:2", "None", "Production"),
        ("stage:3", "None", "Production"),
        ("stage:2", "Production", "Archived"),
        ("stage:1", "Production", "Archived"),
    ]
    assert all(h.who for h in history) and history[2].reason == "+4% accuracy"
    assert history[3].reason == "+4% accuracy"
    with pytest.raises(keel.InvalidInput, match="archive_existing only applies"):
        keel.models.transition_stage("m", 1, "Archived", archive_existing=True)


def test_which_version_was_in_production_at_time_t(ws):
    for i in range(3):
        keel.models.register("chat", f"hf://org/chat-{i}")
    before = _tick()
    keel.models.transition_stage("chat", 1, "Production")
    keel.models.set_alias("chat", "champion", 1)
    t1 = _tick()
    keel.models.transition_stage("chat", 2, "Production", archive_existing=True)
    keel.models.set_alias("chat", "champion", 2, reason="better")
    t2 = _tick()
    keel.models.transition_stage("chat", 3, "Staging")
    keel.models.transition_stage("chat", 2, "Archived", reason="incident")
    t3 = _tick()
    assert keel.models.get("chat", stage="Production", at=t1).version == 1
    assert keel.models.get("chat", stage="Production", at=datetime.fromtimestamp(t2 / 1000)).version == 2
    assert keel.models.versions_in_stage("chat", "Staging", at=t3) == [3]
    with pytest.raises(keel.NotFound, match="no version in Production at that time"):
        keel.models.get("chat", stage="Production", at=t3)
    with pytest.raises(keel.NotFound, match="no version in Production at that time"):
        keel.models.get("chat", stage="Production", at=before)
    assert keel.models.get("chat", alias="champion", at=t1).version == 1
    assert keel.models.get("chat", alias="champion", at=t3).version == 2
    with pytest.raises(keel.NotFound):
        keel.models.get("chat", alias="champion", at=before)
    with pytest.raises(keel.InvalidInput, match="'at' needs a stage or an alias"):
        keel.models.get("chat", at=t1)


def test_aliases_move_and_are_removed_with_audit(ws):
    for i in range(2):
        keel.models.register("m", f"hf://org/m-{i}")
    first = keel.models.set_alias("m", "champion", 1, reason="baseline", who="alice")
    second = keel.models.set_alias("m", "champion", 2, reason="better", who="bob")
    keel.models.set_alias("m", "challenger", 1)
    assert (first.old, first.new, second.old, second.new) == (None, "1", "1", "2")
    assert keel.models.get_model("m").aliases == {"champion": 2, "challenger": 1}
    gone = keel.models.delete_alias("m", "challenger", reason="done")
    assert (gone.old, gone.new) == ("1", None)
    moves = [(h.ref, h.old, h.new, h.who, h.reason) for h in keel.models.history("m")]
    assert moves[:2] == [("champion", None, "1", "alice", "baseline"), ("champion", "1", "2", "bob", "better")]
    assert moves[-1][:3] == ("challenger", "1", None)
    with pytest.raises(keel.NotFound, match="no alias 'challenger'"):
        keel.models.get("m", alias="challenger")
    with pytest.raises(keel.InvalidInput, match="invalid alias"):
        keel.models.set_alias("m", "1.0", 1)
    # A stage name in any case is the stage: no alias may hide it (issue 28).
    with pytest.raises(keel.InvalidInput, match="is the name of the stage Production"):
        keel.models.set_alias("m", "production", 1)
    keel.models.transition_stage("m", 2, "Production")
    assert keel.models.get("m@production").version == 2
    assert keel.models.get("m@Production").version == 2


def test_model_card_round_trip_is_lossless(ws):
    card_file = ws / "card.yaml"
    card_file.write_text(CARD)
    mv = keel.models.register("chat-assistant", "hf://org/chat", card=card_file)
    assert mv.card["training"]["learning_rate"] == 2e-5
    assert keel.models.card("chat-assistant", 1) == mv.card
    out = keel.models.export_card("chat-assistant", 1, ws / "exported.yaml")
    assert out.read_bytes() == CARD.encode()  # byte for byte
    # A card given as data exports as YAML that loads back equal.
    data = {"model": {"name": "x", "version": 2}, "training": {"learning_rate": 1e-4}, "custom": {"k": [1, 2]}}
    keel.models.register("chat-assistant", "hf://org/chat2", card=data)
    assert load_card(keel.models.card_text("chat-assistant", 2)) == keel.models.card_text("chat-assistant", 2)
    from keel.core.model_card import parse_card

    assert parse_card(keel.models.card_text("chat-assistant", 2)) == data


def test_compare_shows_card_metric_and_param_differences(ws):
    run_a = _run_with_artifact(ws)
    with keel.start_run(project="chat") as run_b:
        keel.log_params({"model_name": "llama-3-8b", "quantization": "GPTQ-4bit"})
        keel.log_metrics({"eval_accuracy": 0.88, "eval_latency_ms": 110})
        keel.log_artifact("model_config.yaml")
    keel.models.register("chat", f"runs:/{run_a}/model_config.yaml", card={"evaluation": {"accuracy": 0.85}})
    keel.models.register(
        "chat", f"runs:/{run_b.id}/model_config.yaml", card={"evaluation": {"accuracy": 0.88}, "notes": "x"}
    )
    diff = keel.models.compare("chat", 1, 2)
    metrics = {m.key: (m.a, m.b) for m in diff.metrics}
    assert metrics["eval_accuracy"] == (0.85, 0.88) and metrics["card.accuracy"] == (0.85, 0.88)
    assert metrics["eval_cost_per_1k"] == (0.002, None)
    assert round(next(m for m in diff.metrics if m.key == "eval_accuracy").delta, 6) == 0.03
    assert {c.path for c in diff.card} == {"evaluation.accuracy", "notes"}
    params = {k: (a, b) for k, a, b in diff.params}
    assert params["quantization"] == ("AWQ-4bit", "GPTQ-4bit") and "model_name" not in params
    assert diff.to_dict()["b"] == 2


def test_tags_and_descriptions_are_the_only_mutable_fields(ws):
    keel.models.create("m", description="chat model", tags={"team": "nlp"})
    with pytest.raises(keel.AlreadyExists):
        keel.models.create("m")
    keel.models.register("m", "hf://org/m", tags={"quant": "awq"})
    keel.models.update("m", description="the chat model")
    keel.models.set_tags("m", {"owner": "alice"}, version=1)
    keel.models.delete_tag("m", "team")
    model, version = keel.models.get_model("m"), keel.models.get("m", version=1)
    assert model.description == "the chat model" and model.tags == {}
    assert version.tags == {"quant": "awq", "owner": "alice"} and version.source == "hf://org/m"


def test_bad_input_is_refused_and_leaves_nothing_behind(ws):
    run_id = _run_with_artifact(ws)
    with pytest.raises(keel.NotFound, match="has no artifact 'model'"):
        keel.models.register("chat", f"runs:/{run_id}/model")
    with pytest.raises(keel.NotFound, match="no run"):
        keel.models.register("chat", "runs:/" + "0" * 32 + "/model_config.yaml")
    with pytest.raises(keel.InvalidInput, match="needs a source"):
        keel.models.register("chat", "")
    with pytest.raises(keel.InvalidInput, match="training.epochs must be an integer"):
        keel.models.register("chat", "hf://x", card="training: {epochs: many}\n")
    with pytest.raises(keel.InvalidInput, match="must be a mapping"):
        keel.models.register("chat", "hf://x", card="- a list\n")
    with pytest.raises(keel.NotFound, match="no model card file"):
        keel.models.register("chat", "hf://x", card="missing.yaml")
    with pytest.raises(keel.InvalidInput, match="model name"):
        keel.models.register("bad name/with slash", "hf://x")
    assert keel.models.list_models() == []  # nothing half-registered
    # A folder artifact counts: runs:/<id>/ a prefix that holds files.
    with keel.start_run(project="chat") as run:
        keel.log_artifact("model_config.yaml", artifact_path="model")
    assert keel.models.register("chat", f"runs:/{run.id}/model").version == 1
    keel.models.register("chat", "hf://y")
    with pytest.raises(keel.NotFound, match="no registered model named 'nope'"):
        keel.models.get("nope")
    with pytest.raises(keel.NotFound, match="has no version 9"):
        keel.models.get("chat", version=9)
    with pytest.raises(keel.InvalidInput, match="unknown stage 'Live'"):
        keel.models.transition_stage("chat", 1, "Live")
    with pytest.raises(keel.InvalidInput, match="whole numbers"):
        keel.models.get("chat", version="latest-ish")
    with pytest.raises(keel.NotFound, match="no version in Staging"):
        keel.models.get("chat", stage="Staging")
    with pytest.raises(keel.InvalidInput, match="one of version=, stage= or alias="):
        keel.models.get("chat", version=1, alias="x")


def test_concurrent_registrations_get_distinct_numbers(ws):
    keel.models.register("m", "hf://org/m-0")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                keel.models.register("m", f"hf://org/m-{i}-{j}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(v.version for v in keel.models.versions("m")) == list(range(1, 42))


def test_deleting_versions_and_models_is_audited_and_numbers_are_never_reused(ws):
    for i in range(3):
        keel.models.register("m", f"hf://org/m-{i}")
    keel.models.set_alias("m", "champion", 3)
    keel.models.set_alias("m", "challenger", 2)
    moves = keel.models.delete_version("m", 3, reason="bad weights", who="alice")
    assert [(m.ref, m.old, m.new) for m in moves] == [("champion", "3", None), ("version:3", "3", None)]
    assert [v.version for v in keel.models.versions("m")] == [2, 1]
    with pytest.raises(keel.NotFound, match="no alias 'champion'"):
        keel.models.get("m", alias="champion")
    assert keel.models.register("m", "hf://org/m-new").version == 4  # 3 is never reused
    history = [(h.ref, h.who, h.reason) for h in keel.models.history("m")]
    assert ("version:3", "alice", "bad weights") in history
    keel.models.delete_model("m", reason="retired")
    assert keel.models.list_models() == []
    with pytest.raises(keel.NotFound, match="no registered model named 'm'"):
        keel.models.get("m")
    assert keel.models.history("m")[-1].ref == "model"  # the audit trail outlives the model
    again = keel.models.register("m", "hf://org/m-reborn")
    assert again.version == 5  # the name's numbering continues after every version it ever had
    with pytest.raises(keel.NotFound, match="has no version 9"):
        keel.models.delete_version("m", 9)


@pytest.mark.timeout(20)
def test_hostile_model_cards_are_refused_at_once(ws):
    """A few hundred bytes of aliases expanded to 33.6 MB per GET (20.7 s and 480 MB on the
    server); a python tag was a raw traceback. Both are one InvalidInput now, and nothing is stored."""
    lol = "".join(
        f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n" if i else '  a: &a "lol"\n'
        for i in range(10)
    )
    started = time.perf_counter()
    with pytest.raises(keel.InvalidInput, match=r"model card:\d+: aliases expand the document"):
        keel.models.register("chat", "hf://x", card="model: {name: x}\nnotes:\n" + lol)
    with pytest.raises(keel.InvalidInput, match=r"model card:2: unknown tag !!python/object/apply:os.system"):
        keel.models.register("chat", "hf://x", card="model: {name: x}\nx: !!python/object/apply:os.system [ls]\n")
    assert time.perf_counter() - started < 5
    with pytest.raises(keel.NotFound):
        keel.models.get("chat")
