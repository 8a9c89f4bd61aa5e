"""A/B tests end to end on every backend: lifecycle, resolved versions, exposures, outcomes
from conversation feedback and logged events, analysis."""

import random

import pytest

import keel
from keel.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from keel.sdk import ab


@pytest.fixture
def prompts(ws):
    keel.prompts.register("chat", "v1 {{q}}", version="1.3.0", changelog="first")
    keel.prompts.register("chat", "v2 {{q}} step by step", version="2.0.0", changelog="v2")
    keel.prompts.set_alias("chat", "production", "1.3.0")
    return ws


def create(**extra):
    return ab.create(
        "prompt-v2",
        [
            {"name": "control", "prompt": "chat@production"},
            {"name": "treatment", "prompt": "chat@2.0.0", "model": "gpt-4o", "config": {"llm.temperature": 0.2}},
        ],
        hypothesis="v2 raises thumbs-up",
        weights={"control": 0.5, "treatment": 0.5},
        guardrails=[{"metric": "latency_ms", "worse": "higher"}],
        **extra,
    )


def test_lifecycle_and_bad_input(prompts):
    exp = create(who="alice", reason="Q4 test")
    assert exp.status == "draft" and exp.author == "alice"
    with pytest.raises(AlreadyExists):
        create()
    assert ab.assign("prompt-v2", user_id="u1") is None  # a draft assigns nobody
    with pytest.raises(Conflict, match="not started"):
        ab.stop("prompt-v2")
    started = ab.start("prompt-v2", who="alice", reason="go")
    assert started.resolved["control"] == {"prompt": "chat@1.3.0"}  # the alias, frozen at start
    assert started.resolved["treatment"]["prompt"] == "chat@2.0.0"
    with pytest.raises(Conflict, match="already running"):
        ab.start("prompt-v2")
    ab.stop("prompt-v2", who="bob", reason="enough data")
    with pytest.raises(Conflict, match="already stopped"):
        ab.stop("prompt-v2")
    with pytest.raises(Conflict):
        ab.start("prompt-v2")
    moves = ab.history("prompt-v2")
    assert [(m.old, m.new, m.who) for m in moves] == [
        (None, "draft", "alice"), ("draft", "running", "alice"), ("running", "stopped", "bob"),
    ]  # fmt: skip
    with pytest.raises(NotFound):
        ab.start("nope")
    with pytest.raises(InvalidInput, match="sum to 1.1"):
        ab.create("w", [{"name": "a"}, {"name": "b"}], weights={"a": 0.5, "b": 0.6})
    with pytest.raises(InvalidInput, match="prompt 'chat@9.9.9' does not resolve"):
        ab.create("p", [{"name": "a", "prompt": "chat@1.3.0"}, {"name": "b", "prompt": "chat@9.9.9"}])
    with pytest.raises(InvalidInput, match="model 'assistant@3' does not resolve"):
        ab.create("m", [{"name": "a"}, {"name": "b", "model": "assistant@3"}])


def test_assign_records_exposures_with_resolved_versions(prompts):
    create()
    ab.start("prompt-v2")
    seen = {}
    with keel.start_run(project="serving") as run:
        for i in range(400):
            a = ab.assign("prompt-v2", user_id=f"u{i}")
            seen[f"u{i}"] = a.variant
            assert ab.assign("prompt-v2", user_id=f"u{i}") is a  # sticky
    assert 150 < sum(v == "treatment" for v in seen.values()) < 250
    a = ab.assign("prompt-v2", user_id="u1")
    assert a.prompt in ("chat@1.3.0", "chat@2.0.0")
    treatment = next(ab.assign("prompt-v2", user_id=u) for u, v in seen.items() if v == "treatment")
    assert treatment.to_dict() == {
        "experiment": "prompt-v2", "variant": "treatment", "prompt": "chat@2.0.0", "model": "gpt-4o",
        "config": {"llm.temperature": 0.2}, "payload": None,
    }  # fmt: skip
    assert ab.assign("prompt-v2") is None  # no unit: not assigned, no error
    assert ab.assign("other-experiment", user_id="u1") is None
    status = ab.status("prompt-v2")
    assert sum(status["exposures"].values()) == 400
    service = ab._service()
    variant, resolved, _at = service.exposure("prompt-v2", "u7")
    assert variant == seen["u7"]
    assert resolved["prompt"] == ("chat@2.0.0" if variant == "treatment" else "chat@1.3.0")
    assert run.id  # exposures inside a run carry its id
    ab.stop("prompt-v2")
    assert ab.assign("prompt-v2", user_id="u1") is None  # stopped: nobody is assigned


def test_outcomes_from_conversations_and_events_analyzed(prompts):
    create()
    ab.start("prompt-v2")
    rng = random.Random(7)
    for i in range(1200):
        uid = f"user-{i}"
        a = ab.assign("prompt-v2", user_id=uid)
        up = rng.random() < (0.55 if a.variant == "treatment" else 0.35)
        keel.conversations.log(
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            prompt_version=a.prompt,
            metadata={"user_id": uid, "experiment": "prompt-v2"},
            user_feedback={"thumb": "up" if up else "down", "score": rng.gauss(4 if up else 2, 0.5)},
        )
        latency = rng.gauss(900 if a.variant == "treatment" else 800, 50)
        assert ab.log_outcome("prompt-v2", uid, "latency_ms", latency)
    # feedback for another experiment or without a unit is ignored
    other = {"user_id": "user-1", "experiment": "other"}
    keel.conversations.log(messages=[{"role": "user", "content": "x"}], metadata=other, user_feedback={"thumb": "down"})
    keel.conversations.log(messages=[{"role": "user", "content": "x"}], user_feedback={"thumb": "down"})
    assert ab.log_outcome("prompt-v2", "u", "latency_ms", float("nan")) is False
    with pytest.raises(InvalidInput):
        ab.log_outcome("prompt-v2", "u", "latency_ms", "slow", strict=True)
    keel.conversations.flush()

    result = ab.analyze("prompt-v2", mde=0.05)
    assert sum(result.exposures.values()) == 1200 and not result.srm
    primary = {s.variant: s for s in result.stats["thumbs_up"]}
    assert primary["control"].n + primary["treatment"].n == 1200
    assert 0.28 < primary["control"].mean < 0.42 and 0.48 < primary["treatment"].mean < 0.62
    c = next(c for c in result.comparisons if c.metric == "thumbs_up")
    # a new experiment is sequential unless it states another design: valid at every look
    assert result.design.kind == "sequential" and result.verdict[0].startswith("Design: sequential")
    assert c.test == "mSPRT (always valid)" and c.significant and c.diff > 0.1 and c.ci[0] > 0
    assert result.required_n > 0
    assert "score" in result.stats
    assert [b.metric for b in result.guardrail_breaches] == ["latency_ms"]
    assert any("GUARDRAIL BREACHED: latency_ms" in line for line in result.verdict)
    assert result.to_dict()["comparisons"]


def _store_old_definition(name, definition):
    """An experiment row as keel wrote it before designs were recorded (no design, no bucketing)."""
    from keel.meta.abtests import ABStore

    service = ab._service()
    with service.db.write() as conn:
        ABStore.create(conn, name, definition, "alice")


def _feed(name, units, rates, seed):
    rng = random.Random(seed)
    for i in units:
        a = ab.assign(name, user_id=f"{name}-{i}")
        ab.log_outcome(name, f"{name}-{i}", "converted", float(rng.random() < rates[a.variant]))
    ab.flush()


def test_experiment_stored_before_designs_keeps_its_analysis_with_a_label(ws):
    _store_old_definition(
        "old",
        {"name": "old", "hypothesis": "", "unit": "user_id", "primary_metric": "converted", "higher_is_better": True,
         "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}], "guardrails": [],
         "targeting": {}, "salt": ""},
    )  # fmt: skip
    exp = ab.get("old")
    assert exp.design.kind == "unstated" and exp.definition()["design"] == {"type": "unstated"}
    ab.start("old")
    _feed("old", range(600), {"a": 0.3, "b": 0.45}, 1)
    result = ab.analyze("old")
    assert result.verdict[0].startswith("Design: none stated")
    assert result.comparisons[0].test == "two-proportion z"  # the analysis it always had
    assert result.to_dict()["design"] == {"type": "unstated"}
    # it can move to the sequential design while running (the always-valid test holds from its
    # first unit); units keep their variants (the stored bucketing stays crc32)
    before = {f"old-{i}": ab.assign("old", user_id=f"old-{i}").variant for i in range(50)}
    moved = ab.set_design("old", "sequential", who="bob", reason="we look daily")
    assert moved.design.kind == "sequential" and moved.status == "running" and moved.bucketing == "crc32"
    ab.refresh()
    assert {u: ab.assign("old", user_id=u).variant for u in before} == before
    assert ab.analyze("old").comparisons[0].test == "mSPRT (always valid)"
    service = ab._service()
    with service.db.read() as conn:
        from keel.meta.refs import Refs

        moves = Refs.history(conn, "experiment", "old", "design")
    assert [(m.new, m.who, m.reason) for m in moves] == [("sequential", "bob", "we look daily")]
    with pytest.raises(Conflict, match="only an experiment with no stated design"):
        ab.set_design("old", {"type": "fixed", "n": 100})  # a stated design does not change
    with pytest.raises(NotFound):
        ab.set_design("nope")


def test_fixed_horizon_through_the_store_reads_the_first_planned_units(ws):
    ab.create("fixed", [{"name": "a"}, {"name": "b"}], primary_metric="converted", design={"type": "fixed", "n": 150})
    assert ab.get("fixed").definition()["design"] == {"type": "fixed", "alpha": 0.05, "power": 0.8, "n": 150}
    ab.start("fixed")
    _feed("fixed", range(200), {"a": 0.3, "b": 0.3}, 2)
    early = ab.analyze("fixed")
    assert not early.decided and early.verdict[-1].startswith("Verdict: not decided yet")
    _feed("fixed", range(200, 600), {"a": 0.3, "b": 0.3}, 3)
    at_n = ab.analyze("fixed")
    assert at_n.decided and [s.n for s in at_n.stats["converted"]] == [150, 150]
    assert sum(at_n.exposures.values()) == 600  # SRM sees every unit; the verdict the first 150 a side
    _feed("fixed", range(600, 900), {"a": 0.3, "b": 0.9}, 4)  # later units do not move a verdict already read
    later = ab.analyze("fixed")
    assert later.comparisons[0].p_value == at_n.comparisons[0].p_value and sum(later.exposures.values()) == 900
