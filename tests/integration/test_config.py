"""keel.config with a store: snapshots stored once, attached to runs, history, prompts."""

import json
import shutil
from pathlib import Path

import pytest

import keel
from keel.errors import InvalidInput, NotFound, NoWorkspace
from keel.sdk import config as keel_config
from keel.sdk import lineage

SEED = Path(__file__).parents[1] / "fixtures" / "config" / "production.yaml"


@pytest.fixture
def cfgdir(ws):
    folder = ws / "config"
    folder.mkdir()
    shutil.copy(SEED, folder / "production.yaml")
    (folder / "base.yaml").write_text("llm:\n  api_key: ${OPENAI_API_KEY:-sk-test-0123456789abcdef}\n")
    (folder / "staging.yaml").write_text("llm:\n  model: gpt-4o-mini\nprompt:\n  name: chat\n  version: staging\n")
    return folder


def test_load_in_a_run_records_the_snapshot_once(cfgdir):
    with keel.start_run(project="chat") as run:
        cfg = keel_config.load(env="production")
        again = keel_config.load(env="production")  # same snapshot: recorded once
    assert again.snapshot_hash == cfg.snapshot_hash
    ref = f"config:production@{cfg.snapshot_hash[:12]}"
    assert str(cfg.entity) == ref
    assert ref in [str(e) for e in lineage.inputs(run.id)]
    assert lineage.used_by(ref) == [run.id]
    assert run.id in lineage.used_by("config:production")  # any version
    history = keel_config.history()
    assert [(s.hash, s.env, s.runs) for s in history] == [(cfg.snapshot_hash, "production", [run.id])]
    assert history[0].sources == ["config/base.yaml", "config/production.yaml"]
    snapshot, content = keel_config.snapshot(cfg.snapshot_hash[:10])
    assert content["llm"]["api_key"] == "***" and content["llm"]["model"] == "gpt-4"
    assert snapshot.hash == cfg.snapshot_hash
    client = keel.Client()
    paths = [a.path for a in client.list_artifacts(run.id)]
    assert "config/production.json" in paths
    stored = client.read_artifact(run.id, "config/production.json")
    assert json.loads(stored) == content and b"sk-test" not in stored


def test_dedup_history_and_runs(cfgdir):
    runs = []
    for _ in range(2):
        with keel.start_run(project="chat") as run:
            keel_config.load("production")
        runs.append(run.id)
    with keel.start_run(project="chat") as other:
        keel_config.load("production", overrides=["llm.temperature=0.2"])
        keel_config.load("staging")
    history = keel_config.history()
    assert len(history) == 3
    by_key = {(s.env, tuple(s.runs)) for s in history}
    assert ("production", tuple(runs)) in by_key and ("staging", (other.id,)) in by_key
    assert ("production", (other.id,)) in by_key
    assert [s.env for s in keel_config.history("staging")] == ["staging"]
    paths = [a.path for a in keel.Client().list_artifacts(other.id)]
    assert "config/production.json" in paths and "config/staging.json" in paths


def test_attach_after_load_and_save(cfgdir):
    cfg = keel_config.load("production")  # no run: nothing recorded, no store needed
    assert keel_config.history() == []
    with pytest.raises(InvalidInput, match="no active run"):
        cfg.attach()
    with keel.start_run(project="chat") as run:
        assert cfg.attach() == cfg.entity
        cfg.attach(run)  # idempotent
    assert keel_config.history()[0].runs == [run.id]
    staging = keel_config.load("staging")
    saved = staging.save()
    assert saved.hash == staging.snapshot_hash and saved.runs == []
    assert len(keel_config.history()) == 2
    from keel.sdk.session import get_session
    from keel.services.data_versions import protected_oids

    store = get_session().service.store
    assert {saved.hash, cfg.snapshot_hash} <= protected_oids(store)[0]  # data gc keeps them
    assert json.loads(store.objects.get_bytes(saved.hash))["llm"]["api_key"] == "***"


def test_prompt_resolves_through_the_registry(cfgdir):
    keel.prompts.register("chat", template="Answer briefly: {{ question }}", version="1.3.0", changelog="First")
    keel.prompts.set_alias("chat", "staging", "1.3.0")
    with keel.start_run(project="chat") as run:
        prompt = keel_config.load("staging").load_prompt()
    assert prompt.ref == "chat@1.3.0"
    inputs = [str(e) for e in lineage.inputs(run.id)]
    assert "prompt:chat@1.3.0" in inputs and any(i.startswith("config:staging@") for i in inputs)
    assert keel_config.load("production").load_prompt("chat").ref == "chat@1.3.0"  # version: v1.3
    with pytest.raises(InvalidInput, match="names no prompt"):
        keel_config.load("production").load_prompt()
    with pytest.raises(NotFound):
        keel_config.load("production", overrides=["prompt.version=9.9.9"]).load_prompt("chat")


def test_recording_failure_never_breaks_the_app(cfgdir, monkeypatch, caplog):
    from keel.services.config import ConfigService

    def boom(self, loaded):
        raise RuntimeError("store down")

    monkeypatch.setattr(ConfigService, "record", boom)
    with keel.start_run(project="chat"):
        cfg = keel_config.load("production")
    assert cfg.llm.model == "gpt-4" and "store down" in caplog.text


def test_no_environment_names_the_argument_and_the_environments(cfgdir, monkeypatch):
    monkeypatch.delenv("KEEL_ENV", raising=False)
    with pytest.raises(InvalidInput) as caught:
        keel_config.load()
    assert caught.value.message == "which environment?"
    assert caught.value.hint == (
        "keel.config.load(env='production') (environments in config/: production, staging), or set KEEL_ENV"
    )
    with pytest.raises(InvalidInput) as caught:
        keel_config.load(directory=cfgdir / "missing")
    assert caught.value.hint == "keel.config.load(env='production'), or set KEEL_ENV"
    monkeypatch.setenv("KEEL_ENV", "staging")
    assert keel_config.load().env == "staging"


def test_history_needs_a_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoWorkspace):
        keel_config.history()
