"""The attacks of issue 15, each as a regression test, plus hypothesis fuzzing of the service RPC.

An ordinary account (a writer on ``beta`` only) tries to change or probe a run of
``alpha``, a project it has no role on, through every door: the service RPC,
REST and the MLflow API. Each attempt is refused and the run is unchanged; a
hidden run answers exactly like one that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.batch import WriteBatch
from keel.core.entities import now_ms
from keel.sdk.remote import wire_codec
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.services.contract import operations

CODEC = wire_codec()
ALPHA_RUN = "a1" * 16


@dataclass
class Site:
    client: TestClient
    context: Any
    headers: dict[str, str]
    root: dict[str, str]

    def svc(self, service: str, method: str, *args: Any, headers: dict[str, str] | None = None) -> Any:
        body = {"args": CODEC.encode(list(args)), "kwargs": {}}
        return self.client.post(f"/api/v1/svc/{service}/{method}", json=body, headers=headers or self.headers)

    def alpha(self) -> Any:
        return self.context.tracking.get_run(ALPHA_RUN)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder: Path = tmp_path_factory.mktemp("attacks")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    auth.create_user("mallory")
    root_token = auth.create_token("root", "t")[0]
    token = auth.create_token("mallory", "t")[0]
    auth.grant("mallory", "beta", "writer", "test")
    context = app.state.keel
    context.tracking.write_batch(
        WriteBatch(
            new_runs=[(ALPHA_RUN, "alpha", "secret-run", now_ms(), None, "{}")],
            params=[(ALPHA_RUN, "lr", "float", "0.1", False)],
        )
    )
    context.tracking.create_project("beta")
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["X-Request-Id"] = "probe"  # one id for every request: answers compare whole
        yield Site(client, context, {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {root_token}"})


def test_a_batch_naming_another_projects_run_as_new_changes_nothing(site: Site) -> None:
    batch = WriteBatch(
        new_runs=[(ALPHA_RUN, "beta", "mine", now_ms(), None, "{}")],
        params=[(ALPHA_RUN, "foreign", "str", "x", False)],
        tags=[(ALPHA_RUN, "owned", "yes")],
        run_ends=[(ALPHA_RUN, "failed", now_ms(), None)],
    )
    response = site.svc("tracking", "write_batch", batch)
    assert response.status_code == 409, response.text
    run = site.alpha()
    assert run.project == "alpha" and run.status == "running"
    assert "foreign" not in run.params and "owned" not in run.tags


def test_rows_for_a_run_of_a_hidden_project_answer_not_found(site: Site) -> None:
    response = site.svc("tracking", "write_batch", WriteBatch(tags=[(ALPHA_RUN, "owned", "yes")]))
    assert response.status_code == 404
    assert "alpha" not in response.text
    assert "owned" not in site.alpha().tags


def test_rest_create_run_with_another_projects_run_id_is_refused(site: Site) -> None:
    response = site.client.post("/api/v1/runs", json={"project": "beta", "run_id": ALPHA_RUN}, headers=site.headers)
    assert response.status_code == 409, response.text
    assert site.alpha().project == "alpha"


@pytest.mark.parametrize("prefix", [ALPHA_RUN[:4], ALPHA_RUN[:8], ALPHA_RUN])
def test_probing_run_id_prefixes_reveals_nothing(site: Site, prefix: str) -> None:
    unknown = "f" * len(prefix)
    for path in ("/api/v1/runs/{}", "/api/v1/runs/{}/metrics"):
        hidden = site.client.get(path.format(prefix), headers=site.headers)
        missing = site.client.get(path.format(unknown), headers=site.headers)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.text == missing.text.replace(unknown, prefix)
    hidden = site.svc("tracking", "get_run", prefix)
    missing = site.svc("tracking", "get_run", unknown)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text.replace(unknown, prefix)
    assert "alpha" not in hidden.text and "secret-run" not in hidden.text


def test_mlflow_get_run_and_experiment_reveal_nothing(site: Site) -> None:
    def get(path: str, **params: str) -> Any:
        return site.client.get(f"/api/2.0/mlflow/{path}", params=params, headers=site.headers)

    hidden, missing = get("runs/get", run_id=ALPHA_RUN), get("runs/get", run_id="f" * 32)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text.replace("f" * 32, ALPHA_RUN)
    experiment = site.client.get(
        "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "alpha"}, headers=site.root
    ).json()["experiment"]["experiment_id"]
    hidden, missing = get("experiments/get", experiment_id=experiment), get("experiments/get", experiment_id="999")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text.replace("999", experiment)
    hidden = get("experiments/get-by-name", experiment_name="alpha")
    missing = get("experiments/get-by-name", experiment_name="nosuch")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text.replace("nosuch", "alpha")


# -- fuzzing: arbitrary JSON arguments to every operation -----------------------------------------
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_OPERATIONS = operations()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(min_value=0, max_value=len(_OPERATIONS) - 1),
    args=st.lists(_JSON, max_size=5),
    kwargs=st.dictionaries(st.sampled_from(["name", "run_id", "batch", "project", "filter", "x"]), _JSON, max_size=3),
    as_root=st.booleans(),
)
def test_fuzzed_rpc_calls_never_fail_the_server(
    site: Site, index: int, args: list[Any], kwargs: dict[str, Any], as_root: bool
) -> None:
    op = _OPERATIONS[index]
    body = json.dumps({"args": args, "kwargs": kwargs})
    headers = {**(site.root if as_root else site.headers), "Content-Type": "application/json"}
    response = site.client.post(f"/api/v1/svc/{op.service}/{op.name}", content=body, headers=headers)
    assert response.status_code < 500, (op.qualname, args, kwargs, response.text[:300])
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"code", "message", "hint"}
    assert site.client.get("/api/v1/health").status_code == 200


# -- fuzzing with values that fit each parameter's type, so calls reach the services ---------------
_TEXT = st.sampled_from(
    ["", "x", "a" * 300, "../../x", "/etc/passwd", "a\x00b", "\ud800", "' OR 1=1 --", "<script>", "x" * 70_000]
) | st.text(max_size=12)
_INT = st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**30]) | st.integers(-5, 5)
_FLOAT = st.sampled_from([float("nan"), float("inf"), -0.0, 1e308]) | st.floats(allow_nan=False, width=32)
_SCALAR = st.none() | st.booleans() | _INT | _FLOAT | _TEXT
_ANY = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                    max_leaves=8)  # fmt: skip


def _strategy(hint: Any, name: str) -> st.SearchStrategy[Any]:
    import typing

    if name in ("run_id", "run_ids"):
        ids = st.sampled_from([ALPHA_RUN, ALPHA_RUN[:4], "f" * 32, "zz", "a" * 40])
        return ids if name == "run_id" else st.lists(ids, max_size=3)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
    found: list[st.SearchStrategy[Any]] = []
    for option in options:
        origin = typing.get_origin(option) or option
        if option is type(None):
            found.append(st.none())
        elif origin is str:
            found.append(_TEXT)
        elif origin is bool:
            found.append(st.booleans())
        elif origin is int:
            found.append(_INT)
        elif origin is float:
            found.append(_FLOAT | _INT)
        elif origin in (list, tuple, set, frozenset) or "Sequence" in str(origin) or "Iterable" in str(origin):
            found.append(st.lists(_TEXT | _INT, max_size=3))
        elif origin is dict or "Mapping" in str(origin):
            found.append(st.dictionaries(_TEXT, _ANY, max_size=3))
        else:
            found.append(_ANY)
    return st.one_of(found) if found else _ANY


@st.composite
def _typed_call(draw: st.DrawFn) -> tuple[Any, list[Any]]:
    op = draw(st.sampled_from(_OPERATIONS))
    hints = op.hints
    args = []
    for parameter in list(op.signature.parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            break
        if parameter.default is not parameter.empty and draw(st.booleans()):
            break
        args.append(draw(_strategy(hints.get(parameter.name, Any), parameter.name)))
    return op, args


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=_typed_call(), as_root=st.booleans())
def test_fuzzed_calls_with_well_typed_hostile_values_never_fail_the_server(
    site: Site, call: tuple[Any, list[Any]], as_root: bool
) -> None:
    op, args = call
    try:
        body = json.dumps({"args": CODEC.encode(args), "kwargs": {}})
    except (TypeError, ValueError):
        return  # not encodable by the sdk either
    headers = {**(site.root if as_root else site.headers), "Content-Type": "application/json"}
    response = site.client.post(f"/api/v1/svc/{op.service}/{op.name}", content=body, headers=headers)
    assert response.status_code < 500, (op.qualname, args, response.text[:300])
    if response.status_code >= 400:
        assert set(response.json()["error"]) >= {"code", "message", "hint"}
