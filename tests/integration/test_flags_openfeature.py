"""keel flags through the real OpenFeature SDK (openfeature-sdk)."""

import pytest

openfeature = pytest.importorskip("openfeature")

from openfeature import api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402
from openfeature.flag_evaluation import Reason  # noqa: E402

from keel.sdk import flags  # noqa: E402


@pytest.fixture
def of_client(ws):
    flags.set("new_prompt", rollout=100)
    flags.set("half", rollout=50)
    flags.set(
        "reranker",
        {
            "variants": {"off": None, "cohere": "cohere-rerank-v3", "k": 5, "cfg": {"top_k": 5}},
            "default": "off",
            "rules": [{"if": {"plan": "pro"}, "serve": "cohere"}, {"if": {"plan": "k"}, "serve": "k"},
                      {"if": {"plan": "cfg"}, "serve": "cfg"}],
        },
    )  # fmt: skip
    flags.set("killed", rollout=100, enabled=False)
    api.set_provider(flags.openfeature_provider(refresh_seconds=0))
    yield api.get_client()
    api.clear_providers()


def test_boolean_and_reasons(of_client):
    details = of_client.get_boolean_details("new_prompt", False, EvaluationContext("user-1"))
    assert details.value is True and details.reason == Reason.SPLIT
    assert details.flag_metadata["version"].startswith("production@")
    killed = of_client.get_boolean_details("killed", True, EvaluationContext("user-1"))
    assert killed.value is False and killed.reason == Reason.DISABLED
    half = [of_client.get_boolean_value("half", False, EvaluationContext(f"u{i}")) for i in range(2000)]
    assert 0.45 < sum(half) / len(half) < 0.55
    local = flags.client(refresh_seconds=0)
    assert half == [local.is_enabled("half", user_id=f"u{i}") for i in range(2000)]  # same answers as keel


def test_string_number_object_values(of_client):
    pro = of_client.get_string_details("reranker", "none", EvaluationContext("u1", {"plan": "pro"}))
    assert pro.value == "cohere-rerank-v3" and pro.variant == "cohere" and pro.reason == Reason.TARGETING_MATCH
    free = of_client.get_string_details("reranker", "none", EvaluationContext("u1", {"plan": "free"}))
    assert free.value == "off" and free.reason == Reason.DEFAULT
    assert of_client.get_integer_value("reranker", 0, EvaluationContext("u1", {"plan": "k"})) == 5
    assert of_client.get_object_value("reranker", {}, EvaluationContext("u1", {"plan": "cfg"})) == {"top_k": 5}
    mismatch = of_client.get_integer_details("reranker", 7, EvaluationContext("u1", {"plan": "pro"}))
    assert mismatch.value == 7 and mismatch.error_code == "TYPE_MISMATCH"


def test_missing_flag_returns_default(of_client):
    details = of_client.get_boolean_details("nope", True, EvaluationContext("u1"))
    assert details.value is True and details.error_code == "FLAG_NOT_FOUND"
