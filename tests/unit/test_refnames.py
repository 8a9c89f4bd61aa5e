"""keel.core.refnames: one alias-name rule for every registry."""

from __future__ import annotations

import pytest

from keel.core.refnames import check_alias, match_alias
from keel.errors import InvalidInput


@pytest.mark.parametrize("good", ["production", "Champion", "canary-2", "blue.green", "a_b", "prod"])
def test_valid_aliases_are_kept_as_written(good: str) -> None:
    assert check_alias(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("Production", "stage Production"),
        ("production", "stage Production"),
        ("STAGING", "stage Staging"),
        ("archived", "stage Archived"),
        ("None", "stage None"),
        ("latest", "implicit"),
        ("Model", "reserved"),
        ("LATEST", "implicit"),
        ("v3", "looks like a version"),
        ("v1.2", "looks like a version"),
        ("1prod", "invalid alias"),
        ("", "invalid alias"),
        ("a/b", "invalid alias"),
        ("x" * 101, "invalid alias"),
        (3, "invalid alias"),
    ],
)
def test_bad_model_aliases_are_refused_with_a_reason(bad: object, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_alias(bad, stages=True)
    assert says in caught.value.message


@pytest.mark.parametrize("stage", ["production", "Production", "staging", "archived", "None"])
def test_stage_names_are_ordinary_aliases_where_there_are_no_stages(stage: str) -> None:
    assert check_alias(stage) == stage


@pytest.mark.parametrize("bad", ["latest", "Latest", "v2", "1.2.3", "a b"])
def test_latest_and_versions_are_refused_everywhere(bad: str) -> None:
    with pytest.raises(InvalidInput):
        check_alias(bad)


def test_an_alias_matches_its_stored_spelling_in_any_case() -> None:
    assert match_alias(["Champion", "canary"], "champion") == "Champion"
    assert match_alias(["Champion", "champion"], "champion") == "champion"
    assert match_alias(["canary"], "CANARY") == "canary"
    assert match_alias(["canary"], "stable") is None
