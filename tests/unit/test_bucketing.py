"""Allocation schemes: definitions from before keep their crc32 buckets exactly, new ones
use BLAKE2b-64, every evaluator (flag hot path, rules, distributions, experiments) agrees
with a reference computed from hashlib/zlib (tests/bucketing_reference.py), and the
scheme is recorded."""

import time

import pytest

from bucketing_reference import UNITS, blake2b_reference, crc32_reference
from keel.core.abtests import Experiment, compile_assigner, parse_experiment
from keel.core.bucketing import BUCKETS, DEFAULT, LEGACY, SCHEMES, bucket, bucketer, check_scheme
from keel.core.flags import compile_flag, inherit_bucketing, parse_flag, parse_flags, parse_flags_yaml
from keel.errors import InvalidInput

REFERENCE = {LEGACY: crc32_reference, DEFAULT: blake2b_reference}


def reference_pick(scheme, name, salt, unit, cumulative):
    """The variant whose bucket range holds the unit (``cumulative``: (fraction so far, name))."""
    b = REFERENCE[scheme](name, salt, unit)
    for upper, variant in cumulative:
        if b < min(BUCKETS, round(upper * BUCKETS)):
            return variant
    return cumulative[-1][1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bucket_functions_match_the_documented_formulas(scheme):
    for name, salt in (("f", ""), ("new_prompt", "2026-q1"), ("a.b", "c"), ("a", "b.c"), ("é-flag", "sälz")):
        of = bucketer(scheme, name, salt)
        for unit in UNITS[::7]:
            want = REFERENCE[scheme](name, salt, unit)
            assert of(unit) == want == bucket(name, salt, unit, scheme)
    assert bucket("f", "", "u") == crc32_reference("f", "", "u")  # bucket() without a scheme: the old one


def test_blake2b_prefix_is_unambiguous_where_crc32s_was_not():
    """crc32 hashed "a.b.c." for both (a, b.c) and (a.b, c): two flags, one allocation."""
    same = [(bucket("a", "b.c", u) == bucket("a.b", "c", u)) for u in UNITS[:200]]
    assert all(same)
    differ = [bucket("a", "b.c", u, DEFAULT) != bucket("a.b", "c", u, DEFAULT) for u in UNITS[:200]]
    assert sum(differ) > 190


def test_unknown_schemes_are_refused_with_a_hint():
    assert check_scheme("crc32") == "crc32"
    for bad in ("xxh64", "", None, 1, "BLAKE2B"):
        with pytest.raises(InvalidInput, match="unknown bucketing scheme") as info:
            check_scheme(bad)
        assert "blake2b" in info.value.hint
    with pytest.raises(InvalidInput, match="flag 'f': bucketing: unknown"):
        parse_flag("f", {"rollout": 5, "bucketing": "md5"})
    with pytest.raises(InvalidInput, match="experiment 'e': bucketing: unknown"):
        parse_experiment({"name": "e", "variants": [{"name": "a"}, {"name": "b"}], "bucketing": "md5"})


# -- flags -----------------------------------------------------------------------------------
OLD_STORED_FLAG_SET = {  # a stored flag set as keel wrote it before schemes were recorded
    "flags": {
        "new_prompt": {"default": False, "enabled": True, "rollout": 25},
        "salted": {"default": False, "enabled": True, "rollout": 62.5, "salt": "s1", "unit": "account"},
        "reranker": {
            "variants": {"off": None, "cohere": "c", "v2": "prompt:chat@2.0.0"},
            "default": "off",
            "enabled": True,
            "distribution": {"off": 50, "cohere": 25, "v2": 25},
        },
        "ruled": {
            "default": False,
            "enabled": True,
            "rollout": 40,
            "rules": [{"if": {"plan": "pro"}, "rollout": 10}],
        },
    }
}


def _flag_cases(flags):
    """(compiled flag, unit attribute, cumulative ranges, extra context) of the old flag set."""
    return [
        (compile_flag(flags["new_prompt"]), "user_id", [(0.25, "true"), (1.0, "false")], {}),
        (compile_flag(flags["salted"]), "account", [(0.625, "true"), (1.0, "false")], {}),
        (compile_flag(flags["reranker"]), "user_id", [(0.5, "off"), (0.75, "cohere"), (1.0, "v2")], {}),
        (compile_flag(flags["ruled"]), "user_id", [(0.40, "true"), (1.0, "false")], {}),
        (compile_flag(flags["ruled"]), "user_id", [(0.10, "true"), (1.0, "false")], {"plan": "pro"}),
    ]


@pytest.mark.parametrize("scheme", [None, *SCHEMES])
def test_stored_flags_bucket_by_their_recorded_scheme_and_unstated_means_crc32(scheme):
    doc = {"flags": {k: dict(v) for k, v in OLD_STORED_FLAG_SET["flags"].items()}}
    if scheme is not None:
        for spec in doc["flags"].values():
            spec["bucketing"] = scheme
    flags = parse_flags(doc)
    want_scheme = scheme or LEGACY
    assert {f.scheme for f in flags.values()} == {want_scheme}
    assert all(f.bucketing == scheme for f in flags.values())  # stated or not, as written
    for compiled, unit_attr, cumulative, extra in _flag_cases(flags):
        key, salt = compiled.flag.key, compiled.flag.salt
        for unit in UNITS:
            ctx = {unit_attr: unit, **extra}
            want = reference_pick(want_scheme, key, salt, unit, cumulative)
            assert compiled.pick(ctx) == want, (key, unit)
            assert compiled.enabled(ctx) == (want not in ("false", "off")), (key, unit)  # the inlined hot path too
            assert compiled.explain(ctx)[0] == want


def test_flags_yaml_bucketing_default_and_per_flag_override():
    text = "bucketing: blake2b\nflags:\n  fresh: {rollout: 10}\n  running: {rollout: 10, bucketing: crc32}\n"
    flags = parse_flags_yaml(text)
    assert flags["fresh"].scheme == "blake2b" and flags["fresh"].to_data()["bucketing"] == "blake2b"
    assert flags["running"].scheme == "crc32"
    plain = parse_flags_yaml("flags:\n  old: {rollout: 10}\n")
    assert plain["old"].bucketing is None and plain["old"].scheme == "crc32"
    assert "bucketing" not in plain["old"].to_data()  # an unstated scheme stays unstated in a dump
    with pytest.raises(InvalidInput, match="unknown bucketing scheme 'fast'"):
        parse_flags_yaml("bucketing: fast\nflags:\n  f: {rollout: 1}\n")
    # a flag that happens to be named "bucketing" is still a flag
    assert set(parse_flags({"flags": {"rollout": 1}, "bucketing": {"rollout": 2}})) == {"flags", "bucketing"}


def test_round_trip_keeps_the_scheme():
    flag = parse_flag("f", {"rollout": 30, "bucketing": "blake2b"})
    assert parse_flag("f", flag.to_data()) == flag
    legacy = parse_flag("f", {"rollout": 30, "bucketing": "crc32"})
    assert parse_flag("f", legacy.to_data()).bucketing == "crc32"


def test_inherit_bucketing_keeps_the_previous_scheme_and_gives_new_flags_blake2b():
    old = parse_flag("f", {"rollout": 5})  # stored before schemes: crc32
    moved = parse_flag("f", {"rollout": 5, "bucketing": "blake2b"})
    assert inherit_bucketing({"rollout": 50}, old) == {"rollout": 50, "bucketing": "crc32"}
    assert inherit_bucketing({"rollout": 50}, moved)["bucketing"] == "blake2b"
    assert inherit_bucketing({"rollout": 50}, None)["bucketing"] == DEFAULT
    assert inherit_bucketing({"rollout": 50, "bucketing": "blake2b"}, old)["bucketing"] == "blake2b"  # a move
    assert inherit_bucketing({"rollout": 50, "bucketing": None}, old)["bucketing"] == "crc32"


def test_growing_a_blake2b_rollout_only_adds_units():
    previous: set[object] = set()
    for pct in (1, 5, 10, 25, 50, 100):
        compiled = compile_flag(parse_flag("grow", {"rollout": pct, "bucketing": "blake2b"}))
        on = {u for u in UNITS if compiled.enabled({"user_id": u})}
        assert previous <= on
        previous = on
    assert len(previous) == len(UNITS)


def test_blake2b_evaluation_stays_fast():
    """A floor, not the benchmark (bench/flags.py measures): 200k evaluations well under a second."""
    enabled = compile_flag(parse_flag("f", {"rollout": 25, "bucketing": "blake2b"})).enabled
    ctxs = [{"user_id": f"user-{i}"} for i in range(200_000)]
    start = time.perf_counter()
    for ctx in ctxs:
        enabled(ctx)
    assert time.perf_counter() - start < 1.0


# -- experiments -------------------------------------------------------------------------------
OLD_STORED_EXPERIMENT = {  # ExperimentRow.definition as keel stored it before schemes were recorded
    "name": "prompt-v2",
    "hypothesis": "v2 raises thumbs-up",
    "unit": "user_id",
    "variants": [
        {"name": "control", "weight": 0.2, "prompt": "chat@production"},
        {"name": "treatment", "weight": 0.5, "prompt": "chat@2.0.0"},
        {"name": "other", "weight": 0.3, "prompt": "chat@2.0.0"},
    ],
    "primary_metric": "thumbs_up",
    "higher_is_better": True,
    "guardrails": [],
    "targeting": {},
    "salt": "x",
}


@pytest.mark.parametrize("weights", [(0.2, 0.5, 0.3), (0.5, 0.5)])
@pytest.mark.parametrize("scheme", [None, *SCHEMES])
def test_stored_experiments_assign_by_their_recorded_scheme_and_unstated_means_crc32(scheme, weights):
    spec = dict(OLD_STORED_EXPERIMENT, variants=OLD_STORED_EXPERIMENT["variants"][: len(weights)])
    spec["variants"] = [dict(v, weight=w) for v, w in zip(spec["variants"], weights, strict=True)]
    if scheme is not None:
        spec["bucketing"] = scheme
    exp = parse_experiment(spec)
    assert exp.bucketing == (scheme or LEGACY)
    assert exp.definition()["bucketing"] == exp.bucketing  # recorded on every write
    assign = compile_assigner(exp)
    cumulative, total = [], 0.0
    for v in exp.variants:
        total += v.weight
        cumulative.append((total, v.name))
    for unit in UNITS:
        assert assign(unit, None) == reference_pick(exp.bucketing, "prompt-v2", "x", unit, cumulative), unit


def test_a_new_experiment_gets_blake2b_and_the_definition_records_it():
    spec = {"name": "fresh", "variants": [{"name": "a"}, {"name": "b"}]}
    exp = parse_experiment(spec, default_bucketing=DEFAULT)
    assert exp.bucketing == "blake2b"
    assert parse_experiment(exp.definition()).bucketing == "blake2b"  # read back without the default
    assert parse_experiment({**spec, "bucketing": "crc32"}, default_bucketing=DEFAULT).bucketing == "crc32"
    assert Experiment("e", exp.variants).bucketing == LEGACY
