"""keel.core.config: merge, interpolation, overrides, secrets, provenance, errors."""

import pytest

from keel.core.config import (
    REDACTED,
    ConfigView,
    deep_merge,
    is_secret_key,
    override_layer,
    parse_layer,
    parse_scalar,
    redact,
    resolve,
    validate_json_schema,
)
from keel.errors import InvalidInput

BASE = """\
llm:
  provider: openai
  model: gpt-4o-mini
  temperature: 0.7
  stop: [a, b, c]
rag:
  top_k: 5
"""
PROD = """\
llm:
  model: gpt-4
  stop: [x]
  api_key: ${OPENAI_API_KEY:-sk-dev}
monitoring:
  level: ${LOG_LEVEL:-INFO}
"""


def _resolve(*texts, environ=None, sets=(), env_overrides=None):
    layers = [parse_layer(text, f"config/f{i}.yaml") for i, text in enumerate(texts)]
    base = {}
    for layer in layers:
        base = deep_merge(base, layer.data)
    layers += override_layer(list(sets), env_overrides or {}, base)
    return resolve(layers, environ or {})


def test_deep_merge_merges_mappings_and_replaces_lists():
    a = {"llm": {"model": "a", "stop": [1, 2], "t": 0.1}, "keep": {"x": 1}}
    b = {"llm": {"model": "b", "stop": [3]}, "new": 1}
    merged = deep_merge(a, b)
    assert merged == {"llm": {"model": "b", "stop": [3], "t": 0.1}, "keep": {"x": 1}, "new": 1}
    merged["llm"]["model"] = "changed"
    assert a["llm"]["model"] == "a" and b["llm"]["model"] == "b"  # inputs untouched
    assert deep_merge({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert deep_merge({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_layers_merge_with_provenance():
    resolved = _resolve(BASE, PROD)
    assert resolved.data["llm"] == {
        "provider": "openai",
        "model": "gpt-4",
        "temperature": 0.7,
        "stop": ["x"],
        "api_key": "sk-dev",
    }
    assert resolved.where("llm.model") == "config/f1.yaml:2"
    assert resolved.where("llm.provider") == "config/f0.yaml:2"
    assert resolved.where("llm.stop.0") == "config/f1.yaml:3"
    assert resolved.where("rag.top_k") == "config/f0.yaml:7"
    assert resolved.origin("nope") is None


def test_interpolation_defaults_types_and_escape():
    text = "a: ${A}\nb: ${B:-3}\nc: 'x-${A}-y'\nd: $${A}\ne: ${EMPTY:-fallback}\nf: ${T:-true}\n"
    data = _resolve(text, environ={"A": "hello", "EMPTY": ""}).data
    assert data == {"a": "hello", "b": 3, "c": "x-hello-y", "d": "${A}", "e": "fallback", "f": True}
    assert _resolve("n: ${N}\n", environ={"N": "0.25"}).data == {"n": 0.25}
    typed = _resolve(
        "a: ${V}\nb: ${W}\nc: ${X}\nd: ${Y}\npassword: ${P}\ne: !secret ${P}\nf: ${Z:-1e3}\n",
        environ={"V": "yes", "W": "0123", "X": "-7", "Y": "gpt-4", "P": "123456"},
    ).data
    assert typed == {"a": "yes", "b": "0123", "c": -7, "d": "gpt-4", "password": "123456", "e": "123456", "f": 1000.0}
    with pytest.raises(InvalidInput, match="invalid reference"):
        _resolve("a: ${A:default}\n")
    with pytest.raises(InvalidInput, match="invalid reference"):
        _resolve("a: x${}\n")


def test_unset_variable_names_key_file_and_line():
    with pytest.raises(InvalidInput) as err:
        _resolve(BASE, "llm:\n  model: gpt-4\n  api_key: ${OPENAI_API_KEY}\n")
    message = str(err.value)
    assert "OPENAI_API_KEY" in message and "llm.api_key" in message and "config/f1.yaml:3" in message


def test_an_overridden_file_value_is_not_interpolated():
    resolved = _resolve("llm:\n  key_ref: ${UNSET}\n", sets=["llm.key_ref=literal"])
    assert resolved.data["llm"]["key_ref"] == "literal"
    assert _resolve("a: 1\n", sets=["b=${NOT_EXPANDED}"]).data["b"] == "${NOT_EXPANDED}"


def test_overrides_from_variables_then_set_items():
    resolved = _resolve(
        BASE,
        env_overrides={"KEEL_CONFIG__LLM__MODEL": "gpt-4o", "KEEL_CONFIG__rag__top_k": "8", "OTHER": "x"},
        sets=["llm.temperature=0.2", "llm.stop=[q, r]", "new.flag=true", "rag.top_k=9"],
    )
    llm = resolved.data["llm"]
    assert llm["model"] == "gpt-4o" and llm["temperature"] == 0.2 and llm["stop"] == ["q", "r"]
    assert resolved.data["new"] == {"flag": True}
    assert resolved.data["rag"]["top_k"] == 9  # --set wins over the variable
    assert resolved.where("llm.model") == "env KEEL_CONFIG__LLM__MODEL"
    assert resolved.where("llm.temperature") == "--set llm.temperature"
    assert resolved.where("llm.stop.1") == "--set llm.stop"


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", ".a=1"])
def test_bad_set_items(item):
    with pytest.raises(InvalidInput):
        override_layer([item])


def test_parse_scalar():
    assert parse_scalar("0.2") == 0.2 and parse_scalar("2e-5") == 2e-5 and parse_scalar("10") == 10
    assert parse_scalar("true") is True and parse_scalar("null") is None and parse_scalar("") == ""
    assert parse_scalar("gpt-4o") == "gpt-4o" and parse_scalar("[1, 2]") == [1, 2]
    assert parse_scalar("{a") == "{a"  # not YAML: kept as text


@pytest.mark.parametrize(
    "key", ["api_key", "openai_api_key", "apiKey", "OPENAI_API_KEY", "token", "auth_token", "password",
            "db_password", "secret", "client_secret", "secret_key", "aws_secret_access_key", "credentials"],
)  # fmt: skip
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "token_limit", "key", "model", "top_k", "tokens", "monkey"])
def test_not_secret_keys(key):
    assert not is_secret_key(key)


def test_redaction_by_name_and_by_tag():
    text = (
        "llm:\n  api_key: sk-abcdef\n  model: gpt-4\n  max_tokens: 100\n"
        "db:\n  url: !secret postgres://u:p@host/db\n  pool: 5\n"
        "secrets:\n  a: 1\n  b: [1, 2]\n"
        "hosts:\n  - !secret one\n  - two\n"
        "token: null\n"
    )
    resolved = _resolve(text)
    assert resolved.data["db"]["url"] == "postgres://u:p@host/db"  # the app gets the value
    shown = resolved.redacted()
    assert shown["llm"] == {"api_key": REDACTED, "model": "gpt-4", "max_tokens": 100}
    assert shown["db"] == {"url": REDACTED, "pool": 5}
    assert shown["secrets"] == {"a": REDACTED, "b": [REDACTED, REDACTED]}
    assert shown["hosts"] == [REDACTED, "two"]
    assert shown["token"] is None
    explained = dict((p, v) for p, v, _ in resolved.explain())
    assert explained["db.url"] == REDACTED and "sk-abcdef" not in repr(resolved.explain())
    assert redact({"nested": {"password": "x"}}) == {"nested": {"password": REDACTED}}


def test_secret_tag_from_environment_variable():
    resolved = _resolve("llm:\n  key_ref: !secret ${SECRET_VALUE}\n", environ={"SECRET_VALUE": "s3cr3t"})
    assert resolved.data["llm"]["key_ref"] == "s3cr3t"
    assert resolved.redacted()["llm"]["key_ref"] == REDACTED


def test_secret_stays_secret_when_overridden():
    resolved = _resolve("db:\n  url: !secret a\n", sets=["db.url=b"])
    assert resolved.data["db"]["url"] == "b" and resolved.redacted()["db"]["url"] == REDACTED


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("llm:\n  model: gpt-4\n  temperature: [0.7\n", 4),
        ("llm:\n  model: gpt-4\n bad: x\n", 3),
        ("a: 1\na: 2\n", 2),
        ("a: !unknown x\n", 1),
        ("- a\n- b\n", 1),
        ("a: 'unterminated\n", 2),
    ],
)
def test_bad_yaml_names_file_and_line(text, line):
    with pytest.raises(InvalidInput) as err:
        parse_layer(text, "config/production.yaml")
    assert f"config/production.yaml:{line}" in str(err.value)


def test_empty_file_and_anchors():
    assert parse_layer("", "f").data == {} and parse_layer("# nothing\n", "f").data == {}
    layer = parse_layer("defaults: &d\n  a: 1\n  b: 2\nprod:\n  <<: *d\n  b: 3\n", "f")
    assert layer.data["prod"] == {"a": 1, "b": 3}
    assert parse_layer("when: 2026-11-01\n", "f").data == {"when": "2026-11-01"}


def test_view_attribute_and_item_access():
    resolved = _resolve(BASE + "secrets:\n  token: abc\n")
    view = ConfigView(resolved.data, "", resolved.secrets)
    assert view.llm.model == view["llm"]["model"] == "gpt-4o-mini"
    assert view.llm.stop == ["a", "b", "c"] and "llm" in view and len(view) == 3
    assert view.secrets.token == "abc"
    assert view.secrets.to_dict() == {"token": REDACTED}
    assert "abc" not in repr(view)
    assert view.llm.to_dict(redact=False)["model"] == "gpt-4o-mini"
    with pytest.raises(AttributeError, match="llm.nope"):
        _ = view.llm.nope
    with pytest.raises(AttributeError):
        view.llm = 1
    assert view == resolved.data


SCHEMA = {
    "type": "object",
    "required": ["llm"],
    "properties": {
        "llm": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": {"type": "string", "enum": ["gpt-4", "gpt-4o"]},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_tokens": {"type": "integer", "exclusiveMinimum": 0},
                "stop": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            },
            "additionalProperties": False,
        }
    },
}


def test_json_schema_subset():
    good = {"llm": {"model": "gpt-4", "temperature": 0.7, "max_tokens": 10, "stop": ["a"]}}
    assert validate_json_schema(good, SCHEMA) == []
    bad = {"llm": {"model": "gpt-5", "temperature": 3, "max_tokens": 0, "stop": ["a", 1, "c"], "extra": 1}}
    problems = dict(validate_json_schema(bad, SCHEMA))
    assert set(problems) == {"llm.model", "llm.temperature", "llm.max_tokens", "llm.stop", "llm.stop.1", "llm.extra"}
    assert "must be one of" in problems["llm.model"] and "<= 2" in problems["llm.temperature"]
    assert validate_json_schema({"llm": {}}, SCHEMA) == [("llm", "is missing the required key 'model'")]
    assert validate_json_schema({}, SCHEMA) == [("(top)", "is missing the required key 'llm'")]
    assert validate_json_schema(True, {"type": "integer"})[0][1].startswith("must be integer")
    assert validate_json_schema(None, {"type": ["string", "null"]}) == []
