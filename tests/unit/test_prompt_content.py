"""Prompt content: immutability, round trips, the content hash, the bump rule and diffs."""

import copy
import dataclasses
import json
import pickle

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.hashing import canonical_json
from keel.core.prompt_content import BUMP_RULE, PromptContent, PromptDiff, diff_prompts, required_bump
from keel.errors import InvalidInput

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "{{ question }}"},
]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def base(**changes) -> PromptContent:
    fields = {
        "template": "Answer {{ question }} using {{ context }}.",
        "model": "gpt-4o",
        "parameters": {"temperature": 0.2, "max_tokens": 256},
        "few_shot": [{"question": "2+2?", "answer": "4"}],
        "response_schema": SCHEMA,
    }
    fields.update(changes)
    return PromptContent.create(**fields)


def _reordered(value):
    """The same JSON value with every dict's keys in reverse order."""
    if isinstance(value, dict):
        return {key: _reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list | tuple):
        return [_reordered(item) for item in value]
    return value


# -- the value -----------------------------------------------------------------
def test_defaults():
    content = PromptContent("Hi {{ name }}")
    assert (content.model, dict(content.parameters), content.few_shot, content.response_schema) == ("", {}, None, None)
    assert PromptContent.create("Hi {{ name }}", parameters=None) == content


def test_variables():
    assert base().variables == ("context", "question")
    assert PromptContent(CHAT).variables == ("question",)


def test_chat_is_stored_immutably_and_compares_by_value():
    content = PromptContent(CHAT)
    assert isinstance(content.template, tuple)
    assert list(content.template) == CHAT
    assert content == PromptContent(tuple(dict(m) for m in CHAT))
    with pytest.raises(TypeError, match="immutable"):
        content.template[0]["role"] = "user"  # type: ignore[index]


def test_content_cannot_be_changed_in_place():
    content = base()
    with pytest.raises(dataclasses.FrozenInstanceError):
        content.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError, match="immutable"):
        content.parameters["temperature"] = 1  # type: ignore[index]
    with pytest.raises(TypeError, match="immutable"):
        content.few_shot[0].update(answer="5")
    assert isinstance(content.few_shot, tuple)


def test_caller_values_are_copied():
    parameters = {"stop": ["\n"]}
    content = PromptContent("x", parameters=parameters)
    parameters["stop"].append("END")
    assert content.parameters == {"stop": ("\n",)}


def test_dataclasses_replace_checks_again():
    assert dataclasses.replace(base(), model="gpt-4o-mini").model == "gpt-4o-mini"
    with pytest.raises(InvalidInput, match="syntax error"):
        dataclasses.replace(base(), template="{{ x y }}")


def test_hashable_equal_and_picklable():
    content = base()
    assert hash(content) == hash(base(parameters={"max_tokens": 256, "temperature": 0.2}))
    assert len({content, base(), base(model="other")}) == 2
    assert pickle.loads(pickle.dumps(content)) == content
    assert copy.deepcopy(content) == content
    assert content != "not content"


def test_parameters_are_still_json_serialisable_dicts():
    content = base(parameters={"stop": ["\n"], "n": 1})
    assert json.loads(json.dumps(content.parameters)) == {"stop": ["\n"], "n": 1}
    assert dict(content.parameters) == {"stop": ("\n",), "n": 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"template": "{{ x y }}"}, "syntax error at line 1, column 6"),
        ({"template": [{"role": "user"}]}, r"messages\[0\] has no 'content'"),
        ({"template": 5}, "cannot be a int"),
        ({"model": None}, "model must be a string"),
        ({"parameters": [("temperature", 1)]}, "parameters must be a dict"),
        ({"parameters": {1: 2}}, "invalid parameter name 1"),
        ({"parameters": {"": 2}}, "invalid parameter name ''"),
        ({"parameters": {"stop": {"\n"}}}, r"parameters\['stop'\] holds a set"),
        ({"parameters": {"temperature": float("nan")}}, r"parameters\['temperature'\] is nan"),
        ({"few_shot": [{"q": object()}]}, r"few_shot\[0\]\['q'\] holds a object"),
        ({"response_schema": {1: "x"}}, "response_schema has a key 1"),
    ],
)
def test_invalid_content_is_refused_with_the_bad_part_named(changes, message):
    with pytest.raises(InvalidInput, match=message):
        base(**changes)


# -- dict round trip and hash --------------------------------------------------
def test_to_dict_is_plain_json():
    content = PromptContent.create(CHAT, model="m", parameters={"stop": ["a"]}, few_shot=[1], response_schema=SCHEMA)
    assert content.to_dict() == {
        "template": CHAT,
        "model": "m",
        "parameters": {"stop": ["a"]},
        "few_shot": [1],
        "response_schema": SCHEMA,
    }
    assert type(content.to_dict()["parameters"]) is dict
    assert json.loads(json.dumps(content.to_dict())) == content.to_dict()


@given(
    template=st.sampled_from(["Hi {{ name }}", "static", CHAT]),
    model=st.text(max_size=10),
    parameters=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4),
    few_shot=json_values,
    response_schema=json_values,
)
def test_dict_round_trip_is_exact(template, model, parameters, few_shot, response_schema):
    content = PromptContent.create(template, model, parameters, few_shot, response_schema)
    data = content.to_dict()
    again = PromptContent.from_dict(json.loads(json.dumps(data)))
    assert again == content
    assert again.to_dict() == data
    assert again.content_hash() == content.content_hash()


def test_from_dict_defaults_and_errors():
    assert PromptContent.from_dict({"template": "x"}) == PromptContent("x")
    with pytest.raises(InvalidInput, match="no 'template'"):
        PromptContent.from_dict({"model": "m"})
    with pytest.raises(InvalidInput, match=r"unknown prompt content key\(s\) \['temperature'\]"):
        PromptContent.from_dict({"template": "x", "temperature": 0.1})
    with pytest.raises(InvalidInput, match="must be a dict"):
        PromptContent.from_dict("x")  # type: ignore[arg-type]


def test_content_hash_is_blake3_of_the_canonical_json():
    content = base()
    assert content.content_hash() == blake3.blake3(canonical_json(content.to_dict())).hexdigest()
    assert len(content.content_hash()) == 64


@given(
    parameters=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=5),
    schema=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)
def test_content_hash_ignores_dict_key_order(parameters, schema):
    a = PromptContent.create("{{ q }}", parameters=parameters, response_schema=schema)
    b = PromptContent.create("{{ q }}", parameters=_reordered(parameters), response_schema=_reordered(schema))
    assert a.content_hash() == b.content_hash()
    assert a == b and hash(a) == hash(b)
    assert required_bump(a, b) is None


def test_content_hash_changes_with_any_part():
    hashes = {
        base().content_hash(),
        base(template="Answer {{ question }} with {{ context }}.").content_hash(),
        base(model="gpt-4o-mini").content_hash(),
        base(parameters={"temperature": 0.3, "max_tokens": 256}).content_hash(),
        base(few_shot=None).content_hash(),
        base(response_schema=None).content_hash(),
        base(template=CHAT).content_hash(),
    }
    assert len(hashes) == 7


def test_json_types_are_exact():
    # In Python 1 == 1.0 == True; as stored content they differ, so equality follows the JSON.
    as_int, as_float, as_bool = (PromptContent("x", parameters={"n": v}) for v in (1, 1.0, True))
    assert as_int != as_float and as_int != as_bool
    assert as_int.content_hash() != as_float.content_hash()
    assert required_bump(as_int, as_float) == "minor"


# -- the bump rule -------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "bump"),
    [
        ({}, None),
        ({"parameters": {"max_tokens": 256, "temperature": 0.2}}, None),  # only the key order differs
        ({"template": "Answer {{ question }}."}, "major"),  # variable removed
        ({"template": "Answer {{ question }} using {{ context }} in {{ language }}."}, "major"),  # added
        ({"template": "Answer {{ query }} using {{ context }}."}, "major"),  # renamed
        ({"response_schema": {**SCHEMA, "required": []}}, "major"),
        ({"response_schema": None}, "major"),
        ({"model": "gpt-4o-mini"}, "minor"),
        ({"parameters": {"temperature": 0.7, "max_tokens": 256}}, "minor"),
        ({"parameters": {"temperature": 0.2, "max_tokens": 256, "seed": 7}}, "minor"),
        ({"parameters": {"temperature": 0.2}}, "minor"),
        ({"few_shot": []}, "minor"),
        ({"template": "Answer {{ question }}, using only {{ context }}."}, "patch"),
        ({"template": "Answer {{ question }} using {{ context }}.\n"}, "patch"),
        ({"model": "gpt-4o-mini", "template": "Reply to {{ question }} using {{ context }}."}, "minor"),
        ({"model": "gpt-4o-mini", "template": "Reply to {{ question }}."}, "major"),  # the biggest wins
    ],
)
def test_required_bump(changes, bump):
    assert required_bump(base(), base(**changes)) == bump


def test_required_bump_for_chats():
    chat = PromptContent(CHAT)
    assert required_bump(chat, PromptContent([CHAT[0], {"role": "assistant", "content": "{{ question }}"}])) == "patch"
    assert required_bump(chat, PromptContent([*CHAT, {"role": "user", "content": "Be kind."}])) == "patch"
    assert required_bump(chat, PromptContent([*CHAT, {"role": "user", "content": "{{ tone }}"}])) == "major"


def test_switching_between_text_and_chat_is_major():
    # Callers get a list of messages instead of a string: they must change, like for a new variable.
    assert required_bump(PromptContent("{{ q }}"), PromptContent([{"role": "user", "content": "{{ q }}"}])) == "major"


def test_bump_rule_text_states_each_case():
    for word in ("MAJOR", "MINOR", "PATCH", "variables", "response schema", "model", "parameters", "few-shot"):
        assert word in BUMP_RULE


# -- diffs ---------------------------------------------------------------------
def test_diff_of_identical_content_is_empty():
    diff = diff_prompts(base(), base(parameters={"max_tokens": 256, "temperature": 0.2}))
    assert diff.is_empty
    assert diff == PromptDiff("", None, {}, {}, {}, (), (), False, False, None)


def test_diff_fields():
    old = base()
    new = base(
        template="Answer {{ question }} in {{ language }}.",
        model="gpt-4o-mini",
        parameters={"temperature": 0.7, "seed": 7},
        few_shot=None,
    )
    diff = diff_prompts(old, new, "qa@1.2.0", "qa@2.0.0")
    assert not diff.is_empty
    assert diff.model == ("gpt-4o", "gpt-4o-mini")
    assert diff.parameters_added == {"seed": 7}
    assert diff.parameters_removed == {"max_tokens": 256}
    assert diff.parameters_changed == {"temperature": (0.2, 0.7)}
    assert diff.variables_added == ("language",)
    assert diff.variables_removed == ("context",)
    assert diff.few_shot_changed is True
    assert diff.response_schema_changed is False
    assert diff.required_bump == "major"
    assert diff.template_diff == (
        "--- qa@1.2.0\n"
        "+++ qa@2.0.0\n"
        "@@ -1 +1 @@\n"
        "-Answer {{ question }} using {{ context }}.\n"
        "\\ No newline at end of file\n"
        "+Answer {{ question }} in {{ language }}.\n"
        "\\ No newline at end of file\n"
    )


def test_diff_values_are_plain_json():
    diff = diff_prompts(base(parameters={"stop": ["a"]}), base(parameters={"stop": ["a", "b"], "logit_bias": {"1": 2}}))
    assert diff.parameters_changed == {"stop": (["a"], ["a", "b"])}
    assert diff.parameters_added == {"logit_bias": {"1": 2}}
    assert type(diff.parameters_added["logit_bias"]) is dict


def test_multiline_text_diff_shows_only_changed_lines():
    old = PromptContent("You are a helper.\nAnswer: {{ q }}\nBe brief.\n")
    new = PromptContent("You are a helper.\nAnswer: {{ q }}\nBe very brief.\n")
    assert diff_prompts(old, new).template_diff == (
        "--- a\n+++ b\n@@ -1,3 +1,3 @@\n You are a helper.\n Answer: {{ q }}\n-Be brief.\n+Be very brief.\n"
    )
    assert diff_prompts(old, new).required_bump == "patch"


def test_chat_diff_shows_roles():
    old = PromptContent(CHAT)
    new = PromptContent(
        [{"role": "system", "content": "You are terse."}, {"role": "developer", "content": "{{ question }}"}]
    )
    diff = diff_prompts(old, new, "chat@1.2.0", "chat@1.2.1")
    assert diff.template_diff == (
        "--- chat@1.2.0\n"
        "+++ chat@1.2.1\n"
        "@@ -1,5 +1,5 @@\n"
        " [system]\n"
        " You are terse.\n"
        " \n"
        "-[user]\n"
        "+[developer]\n"
        " {{ question }}\n"
    )
    assert diff.required_bump == "patch"
    assert diff.variables_added == diff.variables_removed == ()


def test_diff_to_dict_is_json():
    diff = diff_prompts(base(), base(model="m2", parameters={"temperature": 1}))
    data = json.loads(json.dumps(diff.to_dict()))
    assert data["model"] == ["gpt-4o", "m2"]
    assert data["parameters_changed"] == {"temperature": [0.2, 1]}
    assert data["parameters_removed"] == {"max_tokens": 256}
    assert data["required_bump"] == "minor"
    assert data["template_diff"] == ""
    assert set(data) == {field.name for field in dataclasses.fields(PromptDiff)}


def test_stored_content_is_rebuilt_without_compiling_its_template():
    """The registry reads versions back with from_stored: the same content, every shape
    check, but a syntax error (impossible in a registered version) is not looked for."""
    for template in ("Hi {{ name }}", CHAT):
        doc = PromptContent.create(template, model="gpt-4o", parameters={"t": 0.1}, few_shot=[{"q": 1}]).to_dict()
        stored = PromptContent.from_stored(doc)
        rebuilt = PromptContent.from_dict(doc)
        assert stored == rebuilt and stored.content_hash() == rebuilt.content_hash()
        assert isinstance(stored.parameters, type(PromptContent.from_dict(doc).parameters))
    assert PromptContent.from_stored({"template": "{{ oops"}).template == "{{ oops"
    with pytest.raises(InvalidInput):
        PromptContent.from_dict({"template": "{{ oops"})
    with pytest.raises(InvalidInput, match="has no 'content'"):
        PromptContent.from_stored({"template": [{"role": "user"}]})
    with pytest.raises(InvalidInput, match="unknown prompt content key"):
        PromptContent.from_stored({"template": "x", "extra": 1})
