"""Model cards: parsing, type checks with line numbers, lossless dumps, diffs."""

import math

import pytest

from keel.core.model_card import card_changes, check_card, dump_card, parse_card
from keel.errors import InvalidInput

ISSUE_CARD = """\
model:
  name: chat-assistant
  version: 3
  base_model: meta-llama/Llama-3-8B-Instruct
  quantization: AWQ-4bit
training:   {dataset: custom_instructions_v2, epochs: 3, learning_rate: 2e-5}
evaluation: {accuracy: 0.85, latency_p95_ms: 150, hallucination_rate: 0.03}
deployment: {stage: production, serving_framework: vllm, gpu: A100-40GB, replicas: 2}
"""


def test_the_issue_card_parses_with_yaml_1_2_numbers():
    card = parse_card(ISSUE_CARD)
    assert card["model"] == {
        "name": "chat-assistant",
        "version": 3,
        "base_model": "meta-llama/Llama-3-8B-Instruct",
        "quantization": "AWQ-4bit",
    }
    assert card["training"]["learning_rate"] == 2e-5 and isinstance(card["training"]["learning_rate"], float)
    assert card["evaluation"] == {"accuracy": 0.85, "latency_p95_ms": 150, "hallucination_rate": 0.03}
    assert card["deployment"]["replicas"] == 2
    assert list(card) == ["model", "training", "evaluation", "deployment"]


def test_dump_loads_back_equal_and_keeps_key_order():
    card = parse_card(ISSUE_CARD)
    text = dump_card(card)
    assert parse_card(text) == card
    assert list(parse_card(text)) == list(card)
    assert "learning_rate: 2.0e-05" in text  # a float to YAML 1.1 readers too


def test_unknown_keys_are_kept_at_every_level():
    card = parse_card("model: {name: x, owner: team-a}\nsafety: {red_team: done, score: 0.9}\nnotes: [a, b]\n")
    assert card["model"]["owner"] == "team-a"
    assert card["safety"] == {"red_team": "done", "score": 0.9}
    assert card["notes"] == ["a", "b"]


def test_dates_become_iso_text_and_json_is_accepted():
    card = parse_card("training: {started: 2026-01-02}\n")
    assert card["training"]["started"] == "2026-01-02"
    assert parse_card('{"evaluation": {"accuracy": 0.5}}') == {"evaluation": {"accuracy": 0.5}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  dataset: d\n  epochs: three\n", r"training\.epochs must be an integer, not 'three' \(line 3\)"),
        ("evaluation: {accuracy: high}\n", r"evaluation\.accuracy must be a number"),
        ("model: {name: 3}\n", r"model\.name must be text"),
        ("deployment: {replicas: true}\n", r"deployment\.replicas must be an integer"),
        ("training: [1, 2]\n", r"training must be a mapping, not a list \(line 1\)"),
        ("- a\n- b\n", "must be a mapping, not a list"),
        ("just text\n", "must be a mapping, not text"),
        ("", "is empty"),
        ("model: {name: [\n", "not valid YAML"),
    ],
)
def test_bad_cards_name_the_key_and_line(text, message):
    with pytest.raises(InvalidInput, match=message):
        parse_card(text)


def test_check_card_accepts_mappings_and_rejects_other_types():
    assert check_card({"model": {"name": "x", "version": "3b"}}) == {"model": {"name": "x", "version": "3b"}}
    with pytest.raises(InvalidInput, match="must be a mapping"):
        check_card(["model"])
    with pytest.raises(InvalidInput, match="holds a set"):
        check_card({"tags": {1, 2}})


def test_card_changes_by_dotted_path():
    old = {"training": {"epochs": 3, "dataset": "v1"}, "evaluation": {"accuracy": 0.8}, "gone": 1}
    new = {"training": {"epochs": 4, "dataset": "v1"}, "evaluation": {"accuracy": 0.8, "f1": 0.7}}
    changes = {c.path: c for c in card_changes(old, new)}
    assert set(changes) == {"training.epochs", "gone", "evaluation.f1"}
    assert (changes["training.epochs"].old, changes["training.epochs"].new) == (3, 4)
    assert not changes["gone"].in_new and not changes["evaluation.f1"].in_old
    assert card_changes({"x": 1}, {"x": 1.0}) == []
    assert card_changes({"x": math.nan}, {"x": math.nan}) == []
