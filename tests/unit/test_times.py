"""keel.core.times: the one parser and printer of "as of T" times, across time zones."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core.times import format_at, parse_at
from keel.errors import InvalidInput, KeelError

T = 1_733_500_000_123  # 2024-12-06T15:46:40.123Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (T, T),
        (float(T), T),
        ("1733500000s", 1_733_500_000_000),
        ("1733500000.5s", 1_733_500_000_500),
        ("1733500000123ms", T),
        ("2024-12-06T15:46:40.123Z", T),
        ("2024-12-06T16:46:40.123+01:00", T),
        ("2024-12-06T10:46:40.123-05:00", T),
        (" 2024-12-06T15:46:40.123z ", T),
        (datetime(2024, 12, 6, 15, 46, 40, 123000, tzinfo=UTC), T),
        (datetime(2024, 12, 6, 16, 46, 40, 123000, tzinfo=timezone(timedelta(hours=1))), T),
    ],
)
def test_unambiguous_times_are_read_exactly(value: object, expected: int) -> None:
    assert parse_at(value) == expected


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (time.time(), "looks like epoch seconds"),
        (1_733_500_000, "looks like epoch seconds"),
        ("1733500000", "no unit"),
        ("2024-12-06T15:46:40", "no time zone"),
        ("2024-12-06", "no time zone"),
        ("yesterday", "not a time"),
        ("", "not a time"),
        ("9" * 500, "not a time"),
        (True, "not a time"),
        (None, "not a time"),
        ([T], "not a time"),
        (float("nan"), "not a time"),
        (float("inf"), "not a time"),
        (-(10**13), "out of range"),
        (10**20, "out of range"),
        ("99999999999999999ms", "out of range"),
    ],
)
def test_ambiguous_or_malformed_times_are_refused_with_how_to_write_them(value: object, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_at(value)
    assert says in caught.value.message
    assert caught.value.hint


def test_a_printed_time_carries_z_and_milliseconds_and_reads_back_exactly() -> None:
    assert format_at(T) == "2024-12-06T15:46:40.123Z"
    assert format_at(1_733_500_000_999) == "2024-12-06T15:46:40.999Z"
    assert format_at(None) == ""
    assert parse_at(format_at(T)) == T


def test_a_naive_datetime_and_a_date_are_local_time() -> None:
    naive = datetime(2024, 12, 6, 15, 46, 40)
    assert parse_at(naive) == int(naive.timestamp() * 1000)
    assert parse_at(date(2024, 12, 6)) == int(datetime(2024, 12, 6).timestamp() * 1000)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo", "Europe/Berlin"])
def test_printed_time_means_one_instant_in_every_time_zone(zone: str) -> None:
    code = (
        "from keel.core.times import format_at, parse_at;"
        f"print(format_at({T}), parse_at(format_at({T})), parse_at('2024-12-06T16:46:40.123+01:00'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TZ": zone}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["2024-12-06T15:46:40.123Z", str(T), str(T)]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), st.integers(), st.floats(), st.datetimes(), st.binary(max_size=20)))
def test_only_keel_errors_escape(value: object) -> None:
    try:
        parse_at(value)
    except KeelError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=100_000_000_000, max_value=253_402_300_799_999))
def test_print_then_parse_is_the_identity(ms: int) -> None:
    assert parse_at(format_at(ms)) == ms
