"""Aggregate math: percentiles from ranks, prices and cost, one group's figures."""

import random

import numpy as np
import pytest

from keel.core.conversation_stats import (
    DEFAULT_PRICES,
    GroupStats,
    cost_of,
    normalize_prices,
    percentile,
    percentile_from_ranks,
    percentile_ranks,
    price_for,
)
from keel.errors import InvalidInput


@pytest.mark.parametrize("n", [1, 2, 3, 10, 21, 100, 1001])
@pytest.mark.parametrize("pct", [50, 95])
def test_percentiles_match_numpy(n, pct):
    values = [random.Random(n).uniform(10, 5000) for _ in range(n)]
    assert percentile(values, pct) == pytest.approx(float(np.percentile(values, pct)))
    ordered = sorted(values)
    lo, hi = percentile_ranks(n, pct)
    assert percentile_from_ranks(n, pct, {lo: ordered[lo], hi: ordered[hi]}) == pytest.approx(
        float(np.percentile(values, pct))
    )


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None
    assert percentile_from_ranks(0, 50, {}) is None


def test_models_are_priced_by_name_prefix_or_provider_path():
    prices = dict(DEFAULT_PRICES)
    assert price_for("gpt-4o", prices) == (2.5, 10.0)
    assert price_for("gpt-4o-2024-08-06", prices) == (2.5, 10.0)
    assert price_for("gpt-4o-mini-2024-07-18", prices) == (0.15, 0.6)
    assert price_for("gpt-4-0613", prices) == (30.0, 60.0)
    assert price_for("openai/gpt-4o", prices) == (2.5, 10.0)
    assert price_for("claude-3-5-sonnet-20241022", prices) == (3.0, 15.0)
    assert price_for("gpt-4omni", prices) is None  # not a boundary
    assert price_for("my-model", prices) is None and price_for(None, prices) is None


def test_cost_is_per_million_tokens():
    assert cost_of(1_000_000, 0, (2.5, 10.0)) == 2.5
    assert cost_of(812, 64, (30.0, 60.0)) == pytest.approx((812 * 30 + 64 * 60) / 1e6)
    assert cost_of(None, None, (1.0, 1.0)) == 0.0


def test_price_tables_accept_dicts_and_pairs_and_refuse_nonsense():
    assert normalize_prices({"a": {"prompt": 1, "completion": 2}, "b": (3, 4), "c": {"input": 5, "output": 6}}) == {
        "a": (1.0, 2.0),
        "b": (3.0, 4.0),
        "c": (5.0, 6.0),
    }
    for bad in ({"a": "cheap"}, {"a": {"prompt": 1}}, {"a": (1, -2)}, {"a": (1, float("inf"))}):
        with pytest.raises(InvalidInput):
            normalize_prices(bad)


def test_a_group_folds_rows_of_several_models():
    stats = GroupStats({"prompt_version": "v1"})
    prices = {"gpt-4": (30.0, 60.0)}
    stats.add("gpt-4", 3, 2, 1, 9.0, 3, 600.0, 3, 3000, 300, 10, 20, prices)
    stats.add("mystery", 2, 0, 0, 0.0, 0, 100.0, 1, 100, 0, 5, 30, prices)
    stats.add("free", 1, 0, 1, 0.0, 0, 0.0, 0, 0, 0, 40, 40, prices)
    assert stats.count == 6 and stats.thumbs_up == 2 and stats.thumbs_down == 2
    assert stats.thumbs_up_rate == 0.5 and stats.avg_score == 3.0
    assert stats.latency_avg == 175.0
    assert stats.prompt_tokens == 3100 and stats.completion_tokens == 300
    assert stats.cost == pytest.approx((3000 * 30 + 300 * 60) / 1e6)
    assert stats.unpriced_models == ["mystery"]  # "free" used no tokens
    assert (stats.first_at, stats.last_at) == (5, 40)
    doc = stats.to_dict()
    assert doc["prompt_version"] == "v1" and doc["cost_per_conversation_usd"] == pytest.approx(stats.cost / 6)
    empty = GroupStats({})
    assert empty.thumbs_up_rate is None and empty.avg_score is None and empty.latency_avg is None
