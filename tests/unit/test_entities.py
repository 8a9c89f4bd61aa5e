"""Entity references, ids and errors."""

import pytest

import keel
from keel.core.entities import EntityRef, new_run_id
from keel.errors import FilterSyntaxError, InvalidInput, KeelError, NotFound


def test_entity_refs_parse_and_print():
    ref = EntityRef.parse("prompt:chat@1.3.0")
    assert ref == EntityRef("prompt", "chat", "1.3.0")
    assert str(ref) == "prompt:chat@1.3.0"
    assert EntityRef.parse("artifact:abc") == EntityRef("artifact", "abc", "")
    for bad in ("nokind", ":x", "kind:"):
        with pytest.raises(InvalidInput, match="entity reference"):
            EntityRef.parse(bad)


def test_run_ids_are_unique_hex():
    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_errors_carry_code_hint_and_status():
    err = NotFound("no run with id 'x'", "list runs")
    assert isinstance(err, KeelError)
    assert err.to_dict() == {"code": "not_found", "message": "no run with id 'x'", "hint": "list runs", "details": {}}
    assert err.http_status == 404 and err.exit_code != 0
    assert str(err) == "no run with id 'x' (list runs)"
    assert issubclass(FilterSyntaxError, InvalidInput)
    assert keel.KeelError is KeelError
