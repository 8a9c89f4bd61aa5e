"""The alias a lineage edge was resolved through (``ref``): what a batch row may carry, rows from
before it (7 fields) still accepted, and how ``kind:name@selector`` reads for ``runs_using``."""

from __future__ import annotations

import pytest

from keel.core.batch import WriteBatch, check_ref, check_row, lineage_rows
from keel.errors import InvalidInput
from keel.sdk.lineage import parse_use

RUN = "0123456789abcdef0123456789abcdef"
T = 1_700_000_000_000


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("", True),
        ("production", True),
        ("Champion", True),
        ("Production", True),  # a model stage resolves through its name: no stage rule here
        ("latest", True),
        ("LATEST", True),
        ("release-2.x_b", True),
        ("a" * 100, True),
        ("a" * 101, False),
        ("1.2", False),  # shaped like a version
        ("v3", False),
        ("has space", False),
        ("-x", False),
        ("x\x00", False),
        (3, False),
        (None, False),
    ],
)
def test_a_ref_is_empty_or_an_alias_name(ref: object, ok: bool) -> None:
    row = (RUN, "input", "prompt", "chat", "1.3.0", "prompt", T, ref)
    if ok:
        assert check_ref(ref) == ref
        check_row("lineage", row)
        WriteBatch(lineage=[row]).validate()  # type: ignore[list-item]
        return
    with pytest.raises(InvalidInput) as err:
        check_ref(ref)
    assert "not an alias name" in err.value.message or "must be text" in err.value.message
    assert err.value.hint
    with pytest.raises(InvalidInput, match=r"lineage\[0\] .*ref"):
        WriteBatch(lineage=[row]).validate()  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("row", "accepted"),
    [
        ((RUN, "input", "prompt", "chat", "1.3.0", "prompt", T), True),  # an older client's row: ref ''
        ((RUN, "input", "prompt", "chat", "1.3.0", "prompt", T, "production"), True),
        ([RUN, "input", "prompt", "chat", "1.3.0", "prompt", T, ""], True),  # lists stand for tuples
        ((RUN, "input", "prompt", "chat", "1.3.0", "prompt"), False),
        ((RUN, "input", "prompt", "chat", "1.3.0", "prompt", T, "production", "extra"), False),
    ],
)
def test_lineage_rows_of_seven_or_eight_fields(row: tuple[object, ...], accepted: bool) -> None:
    batch = WriteBatch(lineage=[row])  # type: ignore[list-item]
    if accepted:
        batch.validate()
        check_row("lineage", row)
        assert lineage_rows([row])[0][7] == (row[7] if len(row) == 8 else "")  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidInput, match=r"must be a tuple of 8 \(or 7, without ref\) fields"):
        batch.validate()
    with pytest.raises(InvalidInput):
        check_row("lineage", row)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prompt:chat", ("prompt", "chat", None, None)),
        ("prompt:chat@production", ("prompt", "chat", "production", "production")),  # alias, or a hash so shaped
        ("prompt:chat@1.3.0", ("prompt", "chat", None, "1.3.0")),
        ("model:m@3", ("model", "m", None, "3")),
        ("kb:docs@v2", ("kb", "docs", None, "v2")),
        ("dataset:d@0badc0ffee", ("dataset", "d", None, "0badc0ffee")),  # cannot be an alias: a version
        ("model:m@Production", ("model", "m", "Production", "Production")),
    ],
)
def test_a_selector_reads_as_a_version_or_an_alias(text: str, expected: tuple[object, ...]) -> None:
    assert parse_use(text) == expected


@pytest.mark.parametrize("text", ["chat", "prompt:", ":chat"])
def test_an_entity_without_kind_or_name_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_use(text)
    assert err.value.hint
