"""Downsampling a metric series for charts (keel.core.downsample): properties and edge cases."""

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.downsample import bucket_extremes, sort_series

values_strategy = st.lists(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=True, width=64),
        st.just(math.nan),
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, max_points=st.integers(min_value=2, max_value=120))
def test_at_most_max_points_increasing_first_and_last_kept(values, max_points):
    kept = bucket_extremes(values, max_points)
    assert len(kept) <= max_points
    assert kept == sorted(set(kept))  # strictly increasing indices: a subsequence of the series
    assert all(0 <= i < len(values) for i in kept)
    if values:
        assert kept[0] == 0 and kept[-1] == len(values) - 1
    if len(values) <= max_points:
        assert kept == list(range(len(values)))


@settings(max_examples=150, deadline=None)
@given(values=values_strategy, max_points=st.integers(min_value=4, max_value=120))
def test_the_extremes_are_always_kept(values, max_points):
    kept = bucket_extremes(values, max_points)
    finite = [v for v in values if not math.isnan(v)]
    if finite:
        shown = [values[i] for i in kept]
        assert min(finite) in shown and max(finite) in shown


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=300),
       max_points=st.integers(min_value=4, max_value=60))  # fmt: skip
def test_every_bucket_keeps_its_lowest_and_highest_point(values, max_points):
    """Between two kept neighbours nothing is lower than both ends' bucket minimum: checked the
    direct way, with the buckets recomputed."""
    kept = set(bucket_extremes(values, max_points))
    if len(values) <= max_points:
        return
    buckets = (max_points - 2) // 2
    interior = len(values) - 2
    for b in range(buckets):
        start, stop = 1 + b * interior // buckets, 1 + (b + 1) * interior // buckets
        if start < stop:
            chunk = values[start:stop]
            assert start + chunk.index(min(chunk)) in kept
            assert start + chunk.index(max(chunk)) in kept


def test_a_spike_in_100_000_points_survives_a_600_point_chart():
    rng = random.Random(7)
    values = [1.0 / (1 + i / 1000) + rng.uniform(-0.01, 0.01) for i in range(100_000)]
    values[31_337] = 50.0
    values[77_777] = -50.0
    kept = bucket_extremes(values, 600)
    assert len(kept) <= 600 and 31_337 in kept and 77_777 in kept
    # a stride would have missed both
    assert 31_337 not in range(0, 100_000, 100_000 // 600) and 77_777 not in range(0, 100_000, 100_000 // 600)


def test_nan_is_never_an_extreme_and_all_nan_buckets_keep_a_point():
    values = [math.nan] * 50 + [1.0, 5.0, -3.0] + [math.nan] * 50
    kept = bucket_extremes(values, 10)
    shown = [values[i] for i in kept]
    assert 5.0 in shown and -3.0 in shown
    assert len(kept) <= 10 and any(math.isnan(v) for v in shown[1:-1])  # the gaps stay visible


def test_too_few_points_asked_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        bucket_extremes([1.0, 2.0, 3.0], 1)
    assert bucket_extremes([1.0, 2.0, 3.0], 2) == [0, 2]
    assert bucket_extremes([], 5) == []


@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(0, 3), st.floats(allow_nan=False)), max_size=60))
def test_sort_series_orders_by_step_then_time_then_position(points):
    steps = [p[0] for p in points]
    stamps = [p[1] for p in points]
    values = [p[2] for p in points]
    expected = sorted(points, key=lambda p: (p[0], p[1]))  # stable: logging order breaks ties
    got = sort_series(steps, stamps, values)
    assert list(zip(*got, strict=True)) == expected


def test_sort_series_returns_an_increasing_series_as_is():
    steps, stamps, values = [0, 1, 5], [3, 2, 1], [0.5, 0.25, 0.125]
    got = sort_series(steps, stamps, values)
    assert got[0] is steps and got[1] is stamps and got[2] is values
