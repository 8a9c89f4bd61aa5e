"""keel.services.config / keel.config without a store: files, environments, schemas, diffs."""

import json
import shutil
import time
from pathlib import Path

import pytest

from keel.errors import InvalidInput, NotFound
from keel.sdk import config as keel_config
from keel.services.config import available_envs, load, prompt_ref

SEED = Path(__file__).parents[1] / "fixtures" / "config" / "production.yaml"


@pytest.fixture
def cfgdir(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(SEED, folder / "production.yaml")
    (folder / "base.yaml").write_text(
        "llm:\n  provider: openai\n  api_key: ${OPENAI_API_KEY:-sk-local-dev-key}\n  retries: 3\n"
        "rag:\n  top_k: 3\n  filters: [public, internal]\n"
    )
    (folder / "staging.yaml").write_text(
        "llm:\n  model: gpt-4o-mini\n  temperature: 0.2\nrag:\n  top_k: 5\n  filters: [public]\n"
        "prompt:\n  name: chat\n  version: staging\n"
    )
    return folder


def test_the_seed_production_yaml_loads_as_is(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(SEED, folder / "production.yaml")
    cfg = keel_config.load(env="production")
    assert cfg.llm.model == "gpt-4" and cfg.llm.temperature == 0.7 and cfg.llm.max_tokens == 1024
    assert cfg["rag"]["reranker"] == "cohere-rerank-v3" and cfg.rag.top_k == 5
    assert cfg["prompt"]["version"] == "v1.3"
    assert cfg.monitoring.alert_threshold.error_rate == 0.01
    assert cfg.source_of("monitoring.alert_threshold.latency_p95") == "config/production.yaml:21"
    assert cfg.files == ["config/production.yaml"] and cfg.env == "production"
    assert len(cfg.snapshot_hash) == 64 and str(cfg.entity) == f"config:production@{cfg.snapshot_hash[:12]}"


def test_base_plus_environment(cfgdir):
    cfg = keel_config.load("production", directory=cfgdir)
    assert cfg.llm.provider == "openai" and cfg.llm.retries == 3 and cfg.llm.model == "gpt-4"
    assert cfg.llm.api_key == "sk-local-dev-key"
    assert cfg.to_dict()["llm"]["api_key"] == "***"
    assert "sk-local-dev-key" not in repr(cfg) and "sk-local-dev-key" not in cfg.to_json()
    assert cfg.to_dict(redact=False)["llm"]["api_key"] == "sk-local-dev-key"
    assert cfg.rag.filters == ["public", "internal"]  # from base: production has none
    assert cfg.source_of("llm.retries").endswith("base.yaml:4")
    assert cfg.source_of("llm.model").endswith("production.yaml:4")
    staging = keel_config.load("staging", directory=cfgdir)
    assert staging.rag.filters == ["public"]  # lists replace
    with pytest.raises(NotFound):
        cfg.source_of("llm.nope")


def test_same_config_same_hash_and_secrets_do_not_change_it(cfgdir, monkeypatch):
    a = keel_config.load("production", directory=cfgdir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-another-one")
    b = keel_config.load("production", directory=cfgdir)
    assert b.llm.api_key == "sk-another-one" and a.snapshot_hash == b.snapshot_hash
    c = keel_config.load("production", directory=cfgdir, overrides=["llm.temperature=0.2"])
    assert c.llm.temperature == 0.2 and c.snapshot_hash != a.snapshot_hash
    assert c.source_of("llm.temperature") == "--set llm.temperature"
    d = keel_config.load("production", directory=cfgdir, overrides={"llm.temperature": 0.2})
    assert d.snapshot_hash == c.snapshot_hash


def test_override_variables(cfgdir, monkeypatch):
    monkeypatch.setenv("KEEL_CONFIG__llm__model", "gpt-4o")
    monkeypatch.setenv("KEEL_CONFIG__RAG__TOP_K", "10")
    cfg = keel_config.load("production", directory=cfgdir)
    assert cfg.llm.model == "gpt-4o" and cfg.rag.top_k == 10
    assert cfg.source_of("rag.top_k") == "env KEEL_CONFIG__RAG__TOP_K"
    assert cfg.sources[-2:] == ["env KEEL_CONFIG__RAG__TOP_K", "env KEEL_CONFIG__llm__model"]


def test_unknown_environment_lists_the_available_ones(cfgdir):
    assert available_envs(cfgdir) == ["production", "staging"]
    with pytest.raises(NotFound) as err:
        load("qa", cfgdir)
    assert "'qa'" in str(err.value) and "production, staging" in str(err.value)
    with pytest.raises(NotFound, match="no configuration directory"):
        load("production", cfgdir / "missing")
    with pytest.raises(InvalidInput):
        load("../etc", cfgdir)
    with pytest.raises(InvalidInput, match="KEEL_ENV"):
        keel_config.load(directory=cfgdir)


def test_env_from_keel_env(cfgdir, monkeypatch):
    monkeypatch.setenv("KEEL_ENV", "staging")
    assert keel_config.load(directory=cfgdir).env == "staging"


def test_unset_variable_and_bad_yaml_name_file_and_line(cfgdir):
    (cfgdir / "dev.yaml").write_text("llm:\n  model: gpt-4\n  org: ${OPENAI_ORG_ID}\n")
    with pytest.raises(InvalidInput) as err:
        load("dev", cfgdir, environ={})
    assert "OPENAI_ORG_ID" in str(err.value) and "llm.org" in str(err.value) and "dev.yaml:3" in str(err.value)
    (cfgdir / "broken.yaml").write_text("llm:\n  model: gpt-4\n    temperature: 0.7\n")
    with pytest.raises(InvalidInput, match=r"broken\.yaml:3: not valid YAML"):
        load("broken", cfgdir)


def test_pydantic_schema(cfgdir):
    from pydantic import BaseModel, ConfigDict, Field

    class Llm(BaseModel):
        model_config = ConfigDict(extra="allow")
        provider: str
        model: str
        temperature: float = Field(ge=0, le=2)
        max_tokens: int

    class Settings(BaseModel):
        model_config = ConfigDict(extra="allow")
        llm: Llm

    cfg = keel_config.load("production", directory=cfgdir, schema=Settings)
    assert isinstance(cfg.validated, Settings) and cfg.validated.llm.max_tokens == 1024
    with pytest.raises(InvalidInput) as err:
        keel_config.load("production", directory=cfgdir, schema=Settings, overrides=["llm.temperature=7"])
    assert "llm.temperature (--set llm.temperature)" in str(err.value)
    (cfgdir / "bad.yaml").write_text("llm:\n  model: gpt-4\n  temperature: hot\n")
    with pytest.raises(InvalidInput) as err:
        keel_config.load("bad", directory=cfgdir, schema=Settings)
    message = str(err.value)
    assert "llm.temperature (" in message and "bad.yaml:3" in message
    assert "llm (" in message and "'max_tokens'" in message  # missing key: named at its parent


def test_json_schema_file(cfgdir):
    schema = {
        "type": "object",
        "required": ["llm"],
        "properties": {
            "llm": {
                "type": "object",
                "properties": {
                    "temperature": {"type": "number", "maximum": 1},
                    "api_key": {"type": "string", "minLength": 10},
                },
            }
        },
    }
    path = cfgdir.parent / "schema.json"
    path.write_text(json.dumps(schema))
    assert load("production", cfgdir, schema=str(path)).validated is None
    with pytest.raises(InvalidInput) as err:
        load("production", cfgdir, schema=path, overrides=["llm.temperature=1.5"])
    assert "llm.temperature (--set llm.temperature) must be <= 1, not 1.5" in str(err.value)
    with pytest.raises(InvalidInput) as err:  # a secret's value never shows
        load("production", cfgdir, schema=schema, overrides=["llm.api_key=shh-secr"])
    assert "shh-secr" not in str(err.value) and "llm.api_key" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        load("staging", cfgdir, schema={"properties": {"rag": {"properties": {"top_k": {"type": "string"}}}}})
    assert "rag.top_k" in str(err.value) and "staging.yaml:5" in str(err.value)
    with pytest.raises(NotFound):
        load("production", cfgdir, schema="nope.json")
    with pytest.raises(InvalidInput):
        load("production", cfgdir, schema=42)


def test_prompt_ref():
    assert prompt_ref({"prompt": {"name": "chat", "version": "production"}}) == "chat@production"
    assert prompt_ref({"prompt": {"version": "chat@1.3.0"}}) == "chat@1.3.0"
    assert prompt_ref({"prompt": "chat@1.3.0"}) == "chat@1.3.0"
    assert prompt_ref({"prompt": {"version": "v1.3", "path": "prompts/production/"}}, "chat") == "chat@v1.3"
    assert prompt_ref({"prompt": {"name": "chat"}}) == "chat"
    with pytest.raises(InvalidInput, match="names no prompt"):
        prompt_ref({"prompt": {"version": "v1.3"}})
    with pytest.raises(InvalidInput, match="no prompt section"):
        prompt_ref({})
    with pytest.raises(InvalidInput, match="quote it"):
        prompt_ref({"prompt": {"name": "chat", "version": 1.3}})


def test_diff(cfgdir):
    changes = {c.path: c for c in keel_config.diff("staging", "production", directory=cfgdir)}
    assert (changes["llm.model"].old, changes["llm.model"].new) == ("gpt-4o-mini", "gpt-4")
    assert "llm.api_key" not in changes  # same secret on both sides
    assert changes["llm.max_tokens"].in_old is False and changes["prompt.name"].in_new is False


def test_load_is_fast_without_a_store(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    text = SEED.read_text().replace("model: gpt-4", "model: ${LLM_MODEL:-gpt-4}")
    (folder / "production.yaml").write_text(text.replace("timeout: 30", "timeout: ${LLM_TIMEOUT:-30}"))
    keel_config.load("production", directory=folder)
    start = time.perf_counter()
    for _ in range(20):
        cfg = keel_config.load("production", directory=folder)
    per_load = (time.perf_counter() - start) / 20
    assert cfg.llm.model == "gpt-4" and cfg.llm.timeout == 30
    assert per_load < 0.005, f"{per_load * 1000:.2f} ms per load"


def test_the_prompt_section_is_reachable_by_attribute(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    shutil.copy(SEED, folder / "production.yaml")
    cfg = keel_config.load("production", directory=folder)
    assert cfg.prompt.version == "v1.3" and cfg.prompt.path == "prompts/production/"
