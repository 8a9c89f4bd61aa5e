"""Refusals generated from the operation declarations (keel.services.contract).

Every declared operation is driven through its RPC route by callers who must be
refused: no token (401), a role too low (403), a run in a project the caller
cannot read (the same 404, byte for byte, as an unknown id), malformed and
oversized arguments (400 in the one error shape). Never a 500, and nothing is
written by a refused call. A new operation is covered here without anyone
editing this file.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import typing
from collections import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.core.traces import SpanBatch
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.contract import Operation, operations

API = "/api/v1/svc"
CODEC = wire_codec()
UNKNOWN_RUN = "c" * 32
OPERATIONS = operations()


@dataclass
class Site:
    client: TestClient
    tokens: dict[str, str]
    db_file: Path
    alpha_run: str
    beta_run: str

    def call(self, user: str | None, op: Operation, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        body = {"args": CODEC.encode(args), "kwargs": CODEC.encode(kwargs or {})}
        headers["Content-Type"] = "application/json"
        # json.dumps escapes a lone surrogate as \ud800, as a hostile client would send it
        return self.client.post(f"{API}/{op.service}/{op.name}", content=json.dumps(body), headers=headers)

    def rows(self) -> dict[str, int]:
        """Row counts of every table but the sign-in and audit bookkeeping."""
        with sqlite3.connect(self.db_file) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {
                t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in tables
                if not t.startswith(("auth_", "ui_", "alembic", "sqlite_"))
            }


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("contract")
    db_file = folder / "keel.db"
    app = create_app(f"sqlite:///{db_file}", str(folder / "objects"), max_json=1 << 20)
    auth = AuthStore(app.state.keel.store.db)
    tokens = {}
    for name, admin in (("root", True), ("reader", False), ("alpha_writer", False)):
        auth.create_user(name, is_admin=admin)
        tokens[name] = auth.create_token(name, "test")[0]
    auth.grant("reader", "@registries", "reader", "test")
    auth.grant("reader", "alpha", "reader", "test")
    auth.grant("alpha_writer", "alpha", "writer", "test")
    context = app.state.keel
    runs = {}
    for project in ("alpha", "beta"):
        run_id = {"alpha": "a" * 32, "beta": "b" * 32}[project]
        context.tracking.write_batch(WriteBatch(new_runs=[(run_id, project, "r", now_ms(), None, "{}")]))
        runs[project] = run_id
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-Request-Id"] = "probe"  # one id for every request: answers compare whole
        yield Site(client, tokens, db_file, runs["alpha"], runs["beta"])


def _sample(hint: Any, name: str, site: Site, run_id: str) -> Any:
    """A value that fits ``hint``, so the call passes the argument checks and reaches authorization."""
    if name in ("run_id", "run_ids"):
        return run_id if name == "run_id" else [run_id]
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None):
            continue
        if origin is str or option is Any:
            return "x"
        if origin in (int, float):
            return 1
        if origin is bool:
            return False
        if origin in (list, tuple, abc.Sequence, abc.Iterable):
            return []
        if origin in (dict, abc.Mapping):
            return {}
        if origin in (set, frozenset):
            return set()
        if origin is WriteBatch:
            return WriteBatch(tags=[(run_id, "k", "v")])
        if origin is SpanBatch:
            span = {"trace_id": "1" * 32, "span_id": "2" * 16, "name": "s", "start_ns": 1, "end_ns": 2}
            return SpanBatch(spans=[("alpha", span)])
        if dataclasses.is_dataclass(origin) and isinstance(origin, type):
            hints = typing.get_type_hints(origin)
            required = {
                f.name: _sample(hints.get(f.name, Any), f.name, site, run_id)
                for f in dataclasses.fields(origin)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            return origin(**required)
    return None


def _arguments(op: Operation, site: Site, run_id: str) -> list[Any]:
    parameters = list(op.signature.parameters.values())[1:]
    hints = op.hints
    args = []
    for parameter in parameters:
        variadic = parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        if parameter.default is not parameter.empty or variadic:
            break
        args.append(_sample(hints.get(parameter.name, Any), parameter.name, site, run_id))
    return args


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "hint"} <= set(body["error"]), body
    return dict(body["error"])


def _ids(op: Operation) -> str:
    return op.qualname


@pytest.mark.parametrize("op", OPERATIONS, ids=_ids)
def test_anonymous_callers_are_refused(site: Site, op: Operation) -> None:
    before = site.rows()
    _error(site.call(None, op, _arguments(op, site, site.alpha_run)), 401)
    assert site.rows() == before


WRITES = [op for op in OPERATIONS if op.role != "reader"]


@pytest.mark.parametrize("op", WRITES, ids=_ids)
def test_a_reader_is_refused_every_write_and_nothing_is_written(site: Site, op: Operation) -> None:
    before = site.rows()
    response = site.call("reader", op, _arguments(op, site, site.alpha_run))
    assert response.status_code in (403, 404), (response.status_code, response.text[:300])
    _error(response, response.status_code)
    assert site.rows() == before


RUN_SCOPED = [op for op in OPERATIONS if op.scope.kind in ("run", "runs", "batch")]


@pytest.mark.parametrize("op", RUN_SCOPED, ids=_ids)
def test_a_run_in_a_hidden_project_answers_exactly_like_an_unknown_run(site: Site, op: Operation) -> None:
    before = site.rows()
    hidden = site.call("alpha_writer", op, _arguments(op, site, site.beta_run))
    unknown = site.call("alpha_writer", op, _arguments(op, site, UNKNOWN_RUN))
    hidden_error, unknown_error = _error(hidden, 404), _error(unknown, 404)
    assert hidden_error == {**unknown_error, "message": unknown_error["message"].replace(UNKNOWN_RUN, site.beta_run)}
    assert "beta" not in hidden.text
    assert site.rows() == before


def _malformed(op: Operation, site: Site) -> list[tuple[list[Any], dict[str, Any]]]:
    """Argument lists that are wrong in shape or size for ``op``."""
    good = _arguments(op, site, site.alpha_run)
    cases: list[tuple[list[Any], dict[str, Any]]] = [
        ([*good, *(["extra"] * 12)], {}),  # too many positional arguments
        (good, {"no_such_argument": 1}),
        ([], {}) if good else (["x"] * 12, {}),
        (["\ud800" if isinstance(v, str) else v for v in good], {}),  # a lone surrogate
        ([("y" * ((1 << 20) + 1)) if isinstance(v, str) else v for v in good], {}),  # a 1 MiB string
        ([2**70 if not isinstance(v, WriteBatch) else v for v in good], {}),  # out of int64, or the wrong type
    ]
    nested: Any = "leaf"
    for _ in range(40):
        nested = [nested]
    cases.append(([nested for _ in good], {}))
    return cases


@pytest.mark.parametrize("op", OPERATIONS, ids=_ids)
def test_malformed_or_oversized_arguments_are_400_and_write_nothing(site: Site, op: Operation) -> None:
    before = site.rows()
    for args, kwargs in _malformed(op, site):
        if args == _arguments(op, site, site.alpha_run) and not kwargs:
            continue  # nothing was made wrong (no argument of that kind)
        response = site.call("root", op, args, kwargs)
        assert response.status_code in (400, 404, 409, 413), (op.qualname, response.status_code, response.text[:300])
        _error(response, response.status_code)
    assert site.rows() == before


def test_undeclared_methods_are_not_callable(site: Site) -> None:
    headers = {"Authorization": f"Bearer {site.tokens['root']}"}
    for path in ("tracking/download_artifacts", "tracking/__init__", "kb/add_directory", "nosuch/thing"):
        _error(site.client.post(f"{API}/{path}", json={"args": []}, headers=headers), 400)
