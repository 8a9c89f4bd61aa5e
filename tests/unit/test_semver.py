"""Semantic versions: parsing, printing, ordering, bumps and the kind of a change."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.semver import BUMPS, SemVer
from keel.errors import InvalidInput

parts = st.integers(min_value=0, max_value=10_000)
versions = st.builds(SemVer, parts, parts, parts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.3.0", SemVer(1, 3, 0)),
        ("v1.3.0", SemVer(1, 3, 0)),
        ("1.3", SemVer(1, 3, 0)),  # prompt_config.yaml files say version: "1.3"
        ("v2.0", SemVer(2, 0, 0)),
        ("0.0.0", SemVer(0, 0, 0)),
        ("10.20.30", SemVer(10, 20, 30)),
        (" 1.2.3 ", SemVer(1, 2, 3)),
    ],
)
def test_parse(text, expected):
    assert SemVer.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["", "1", "1.", "1.2.", "1.2.3.4", "01.2.3", "1.02", "1.2.3-rc1", "1.2.3+build", "V1.2.3", "a.b.c", "1..2"]
)
def test_parse_refuses_other_formats(text):
    with pytest.raises(InvalidInput, match="MAJOR.MINOR.PATCH"):
        SemVer.parse(text)


def test_parse_refuses_a_number_with_a_hint_to_quote_it():
    with pytest.raises(InvalidInput, match="not a string") as caught:
        SemVer.parse(1.3)  # type: ignore[arg-type]  # what YAML gives for an unquoted version: 1.3
    assert "quote" in (caught.value.hint or "")


def test_parts_are_non_negative_integers():
    with pytest.raises(InvalidInput):
        SemVer(1, -1, 0)
    with pytest.raises(InvalidInput):
        SemVer(1, True, 0)  # type: ignore[arg-type]


def test_str():
    assert str(SemVer(1, 3, 0)) == "1.3.0"
    assert str(SemVer.parse("v1.3")) == "1.3.0"


@given(versions)
def test_str_and_parse_round_trip(version):
    assert SemVer.parse(str(version)) == version


@given(versions, versions)
def test_order_is_numeric_not_textual(a, b):
    key = lambda v: (v.major, v.minor, v.patch)  # noqa: E731
    assert (a < b) == (key(a) < key(b))
    assert (a == b) == (key(a) == key(b))


def test_order_examples():
    assert SemVer.parse("1.10.0") > SemVer.parse("1.9.3")
    assert sorted(SemVer.parse(t) for t in ["2.0.0", "1.10.0", "1.2.0", "1.2.10"]) == [
        SemVer(1, 2, 0),
        SemVer(1, 2, 10),
        SemVer(1, 10, 0),
        SemVer(2, 0, 0),
    ]
    assert len({SemVer(1, 2, 3), SemVer.parse("1.2.3")}) == 1  # hashable


def test_bump():
    v = SemVer(1, 3, 2)
    assert v.bump("major") == SemVer(2, 0, 0)
    assert v.bump("minor") == SemVer(1, 4, 0)
    assert v.bump("patch") == SemVer(1, 3, 3)
    assert BUMPS == ("major", "minor", "patch")


def test_unknown_bump():
    with pytest.raises(InvalidInput, match="unknown bump 'huge'"):
        SemVer(1, 0, 0).bump("huge")


@given(versions, st.sampled_from(BUMPS))
def test_a_bump_is_greater_and_of_its_kind(version, kind):
    bumped = version.bump(kind)
    assert bumped > version
    assert bumped.kind_of_change(version) == kind


def test_kind_of_change():
    old = SemVer(1, 5, 3)
    assert SemVer(2, 0, 0).kind_of_change(old) == "major"
    assert SemVer(3, 1, 9).kind_of_change(old) == "major"
    assert SemVer(1, 6, 0).kind_of_change(old) == "minor"
    assert SemVer(1, 6, 7).kind_of_change(old) == "minor"
    assert SemVer(1, 5, 4).kind_of_change(old) == "patch"
    assert SemVer(1, 5, 3).kind_of_change(old) is None
    assert SemVer(1, 5, 2).kind_of_change(old) is None
    assert SemVer(1, 4, 9).kind_of_change(old) is None
    assert SemVer(0, 9, 9).kind_of_change(old) is None
