"""keel's one YAML reader (keel.core.yaml_safe) and every YAML keel reads through it: bounded in
size, depth and alias expansion, safe tags only, every failure an InvalidInput with file:line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.config import parse_layer, parse_scalar
from keel.core.flags import parse_flags_yaml
from keel.core.model_card import parse_card
from keel.core.yaml_safe import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_DOCUMENT_CHARS,
    MAX_INT_DIGITS,
    SafeYamlLoader,
    Yaml12Loader,
    compose_yaml,
    load_yaml,
)
from keel.errors import InvalidInput, KeelError


def laughs(levels: int, width: int = 10, indent: str = "") -> str:
    """The billion-laughs document: each level an anchored list of ``width`` aliases of the one before."""
    lines = [f'{indent}a0: &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"{indent}a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


# A model card like the 312-byte one: nine levels of nine "lol"s under a card section.
CARD_BOMB = "model: {name: x}\nnotes:\n" + "".join(
    f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n" if i else '  a: &a "lol"\n'
    for i in range(10)
)


def test_the_card_bomb_is_small():
    assert len(CARD_BOMB) < 400


# -- what loads, as PyYAML's safe loader would ---------------------------------------------
def test_plain_documents_load_like_safe_load():
    text = "a: 1\nb: [1, 2.5, {c: d}]\nx: &x {k: v}\ny: {<<: *x, z: 1}\nwhen: 2024-01-02\nyes_: yes\nn: null\n"
    import yaml

    assert load_yaml(text, "t.yaml") == yaml.safe_load(text)
    assert load_yaml("", "t.yaml") is None
    assert load_yaml("# only a comment\n", "t.yaml") is None
    assert load_yaml(b"a: 1\n", "t.yaml") == {"a": 1}


def test_yaml_12_floats_and_their_linear_pattern():
    assert load_yaml("a: 2e-5\nb: 1E3\nc: .5\nd: 1.\ne: 1_000\nf: 7\n", "t", Yaml12Loader) == {
        "a": 2e-5, "b": 1000.0, "c": 0.5, "d": 1.0, "e": 1000, "f": 7,
    }  # fmt: skip
    assert load_yaml("a: 2e-5\n", "t", SafeYamlLoader) == {"a": "2e-5"}  # YAML 1.1 reads text
    # 100,000 digits then a letter: text, read in linear time (the old pattern took 9 s on 16,000)
    started = time.perf_counter()
    assert load_yaml("a: " + "1" * 100_000 + "x\n", "t", Yaml12Loader) == {"a": "1" * 100_000 + "x"}
    assert time.perf_counter() - started < 1


# -- what is refused, with the file and line -------------------------------------------------
@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (laughs(10), r"t\.yaml:6: aliases expand the document by more than 100,000 values \(at \*a4\)"),
        ("a: &a [1, *a]\n", r"t\.yaml:1: recursive alias \*a"),
        ("a: &a {b: {c: *a}}\n", r"t\.yaml:1: recursive alias \*a"),
        ("x: 1\na: " + "1" * 100_000 + "\n", r"t\.yaml:2: an integer of 100,000 digits is too large \(at most 4,300\)"),
        ("a: -0x" + "f" * 5000 + "\n", r"t\.yaml:1: an integer of 5,0\d\d digits"),
        ("a: !!python/object/apply:os.system ['echo hi']\n", r"t\.yaml:1: unknown tag !!python/object/apply:os.system"),
        ("a:\n  b: !!python/name:os.system\n", r"t\.yaml:2: unknown tag !!python/name:os.system"),
        ("a: !custom {x: 1}\n", r"t\.yaml:1: unknown tag !custom"),
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), r"t\.yaml:1: nested deeper than 64 levels"),
        ("".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 2)), r"t\.yaml:65: nested deeper than 64"),
        # an alias brings the depth of what it names
        ("a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n", r"t\.yaml:2: nested deeper"),
        ("a: &a " + "x" * 1000 + "\nb: [" + ", ".join(["*a"] * 10_500) + "]\n", r"more than 10,485,760 characters"),
        ("a: 2024-13-45\n", r"t\.yaml:1: not valid YAML \(column 4\): cannot read '2024-13-45'"),
        ("a: !!int ''\n", r"t\.yaml:1: not valid YAML .*cannot read '' as tag:yaml.org,2002:int"),
        ("? [1]\n: 2\n", r"t\.yaml:1: not valid YAML .*unhashable key"),
        ("a: 1\n---\nb: 2\n", r"t\.yaml:2: not valid YAML .*expected a single document"),
        ("a: [1\n", r"t\.yaml:2: not valid YAML"),
        ("a: *nowhere\n", r"t\.yaml:1: not valid YAML .*undefined alias 'nowhere'"),
        ("a: &x 1\nb: &x 2\n", r"t\.yaml:2: not valid YAML .*duplicate anchor 'x'"),
        ("a: \x00\n", r"t\.yaml: not valid YAML: unacceptable character"),
        ("a: \ud800\n", r"t\.yaml: not valid text"),
    ],
)
def test_refusals_name_the_file_and_line(text, message):
    with pytest.raises(InvalidInput, match=message):
        load_yaml(text, "t.yaml", Yaml12Loader)


def test_size_limit_before_parsing():
    with pytest.raises(InvalidInput, match=r"big\.yaml: 10,485,761 characters is more YAML than keel reads"):
        compose_yaml("a" * (MAX_DOCUMENT_CHARS + 1), "big.yaml")
    with pytest.raises(InvalidInput, match="YAML must be text"):
        compose_yaml(42, "x")  # type: ignore[arg-type]


def test_alias_budget_allows_ordinary_reuse():
    """Merge keys and a reused block are far below the bound; just under it still loads."""
    base = "defaults: &d {retries: 3, timeout: 30, model: gpt-4o}\n"
    envs = "".join(f"env{i}: {{<<: *d, name: e{i}}}\n" for i in range(50))
    data = load_yaml(base + envs, "t")
    assert data["env49"] == {"retries": 3, "timeout": 30, "model": "gpt-4o", "name": "e49"}
    # a 10-item list aliased (MAX_ALIAS_NODES // 11) times: 11 nodes each, just under the bound
    times = MAX_ALIAS_NODES // 11
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [" + ", ".join(["*a"] * times) + "]\n"
    assert len(load_yaml(text, "t")["b"]) == times
    with pytest.raises(InvalidInput, match="alias"):
        load_yaml(text.replace("]\n", ", *a, *a]\n", 1).replace("b: [", "b: [*a, "), "t")


def test_depth_just_inside_the_bound_loads():
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH, "t") == eval("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert load_yaml("a: " + "1" * MAX_INT_DIGITS + "\n", "t") == {"a": int("1" * MAX_INT_DIGITS)}


# -- every YAML keel reads goes through it ----------------------------------------------------
@pytest.mark.timeout(10)
def test_config_files():
    with pytest.raises(InvalidInput, match=r"config/prod\.yaml:2: unknown tag !!python/object/apply"):
        parse_layer("llm:\n  model: !!python/object/apply:os.system ['echo pwned']\n", "config/prod.yaml")
    with pytest.raises(InvalidInput, match=r"config/prod\.yaml:6: aliases expand"):
        parse_layer(laughs(10), "config/prod.yaml")
    with pytest.raises(InvalidInput, match=r"config/prod\.yaml:1: recursive alias"):
        parse_layer("a: &a [1, *a]\n", "config/prod.yaml")
    with pytest.raises(InvalidInput, match=r"config/prod\.yaml:1: an integer of 100,000 digits"):
        parse_layer("n: " + "9" * 100_000 + "\n", "config/prod.yaml")
    layer = parse_layer("llm:\n  api_key: !secret sk-abc\n  base: &b {t: 1}\n  other: *b\n", "c.yaml")
    assert layer.data["llm"]["api_key"] == "sk-abc" and layer.secrets == {"llm.api_key"}
    assert layer.data["llm"]["other"] == {"t": 1}
    # overrides: what is not YAML, or past a bound, stays the text given
    assert parse_scalar("[1, 2]") == [1, 2] and parse_scalar("9" * 5000) == "9" * 5000
    assert parse_scalar("!!python/object/apply:os.system [x]") == "!!python/object/apply:os.system [x]"
    assert parse_scalar("!secret x") == "!secret x"


@pytest.mark.timeout(10)
def test_model_cards():
    with pytest.raises(InvalidInput, match=r"model card:\d+: aliases expand"):
        parse_card(CARD_BOMB)
    with pytest.raises(InvalidInput, match=r"model card:2: unknown tag !!python/object/apply:os.system"):
        parse_card("model: {name: x}\nnotes: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(InvalidInput, match=r"model card:1: recursive alias"):
        parse_card("model: &m {name: *m}\n")
    assert parse_card("training: {learning_rate: 2e-5}\n") == {"training": {"learning_rate": 2e-5}}


@pytest.mark.timeout(10)
def test_flags_files():
    with pytest.raises(InvalidInput, match=r"flags\.yaml:\d+: aliases expand"):
        parse_flags_yaml("flags:\n  f: {rollout: 10}\n" + laughs(10, indent=""))
    with pytest.raises(InvalidInput, match=r"flags\.yaml:2: unknown tag !!python/object/new:os.system"):
        parse_flags_yaml("flags:\n  f: !!python/object/new:os.system [x]\n")
    assert parse_flags_yaml("flags:\n  r:\n    variants: {off: 1, on: 2}\n")["r"].variants == {"off": 1, "on": 2}


def test_prompt_config_and_eval_specs_and_dvc_files(tmp_path):
    from keel.cli.eval import load_spec
    from keel.services.importers.dvc_files import parse_outs
    from keel.services.prompt_files import _compose

    with pytest.raises(InvalidInput, match=r"prompt_config\.yaml:6: aliases expand"):
        _compose(tmp_path / "prompt_config.yaml", laughs(10))
    with pytest.raises(InvalidInput, match=r"prompt_config\.yaml:\d: malformed YAML \(column 1\)"):
        _compose(tmp_path / "prompt_config.yaml", "chat:\n  version: [1\n")
    spec = tmp_path / "eval.yaml"
    spec.write_text("data: d\nscorers: [exact_match]\nmodel: !!python/object/apply:os.system [x]\n")
    with pytest.raises(InvalidInput, match=r"eval\.yaml:3: unknown tag"):
        load_spec(spec)
    with pytest.raises(InvalidInput, match=r"data\.dvc:1: recursive alias"):
        parse_outs("outs: &o [*o]\n", "data.dvc")


# -- bounded time and memory, measured in a fresh process ---------------------------------------
_MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    from keel.core.config import parse_layer
    from keel.core.model_card import parse_card
    from keel.errors import KeelError
    text, kind = sys.stdin.read(), sys.argv[1]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        (parse_card if kind == "card" else lambda t: parse_layer(t, "c.yaml"))(text)
        error = None
    except KeelError as exc:
        error = str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"error": error, "seconds": time.perf_counter() - started, "kib": after - before}))
    """
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("card", CARD_BOMB),
        ("config", laughs(10)),
        ("config", laughs(30, width=2)),  # deep rather than wide: 2**30 once expanded
        ("config", "a: &a [1, *a]\n"),
        ("config", "n: " + "1" * 100_000 + "\n"),
    ],
)
def test_bombs_cost_little_time_and_memory(kind, text):
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, kind], input=text, capture_output=True, text=True, timeout=50, check=True
    )
    result = json.loads(out.stdout)
    assert result["error"] and "\n" not in result["error"]
    assert result["seconds"] < 2, result
    assert result["kib"] < 50 * 1024, result  # the bomb itself expands to gigabytes


# -- any text: a value or a KeelError, never another exception -------------------------------------
_PIECES = st.sampled_from(
    ["&a ", "&b ", "*a", "*b", "[", "]", "{", "}", ", ", ": ", "- ", "? ", "\n", "  ", "<<: ", "'", '"', "#", "|",
     ">", "---\n", "...\n", "%YAML 1.1\n", "!!python/object/apply:os.system ", "!secret ", "!!int ", "!!binary ",
     "!!set ", "!!omap ", "!!timestamp ", "!!float ", "!custom ", "!", "2024-13-45", "1" * 5000, "0x", "0b",
     "1:2:3", "2e-5", ".inf", "~", "null", "yes", "\t", "\x00", "\ud800", "\ufeff", "é"]
)  # fmt: skip
_YAMLISH = st.lists(_PIECES | st.text(max_size=4), max_size=40).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_YAMLISH)
def test_any_text_is_a_value_or_a_keel_error(text):
    for read in (
        lambda: load_yaml(text, "t", SafeYamlLoader),
        lambda: load_yaml(text, "t", Yaml12Loader),
        lambda: parse_layer(text, "t"),
        lambda: parse_card(text),
        lambda: parse_flags_yaml(text),
        lambda: parse_scalar(text),
    ):
        try:
            read()
        except KeelError:
            pass
