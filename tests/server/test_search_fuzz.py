"""Fuzzing the search endpoints of a live server: no query takes the process down.

A real ``uvicorn`` process serves a SQLite store (a crash in the database
engine, as SQLite 3.40's segfault on a 31-join sort was, kills that process and
is seen here as a dropped connection and a dead process, not as a dead pytest).
Hypothesis drives ``GET /api/v1/runs`` (filter, order_by, limit, page_token,
project, deleted), the service RPC ``tracking.search_runs``, MLflow's ``POST
/api/2.0/mlflow/runs/search`` (filter, order_by, max_results, page_token,
experiment_ids, run_view_type) and MLflow's other searches (experiments,
registered models, model versions) with near-valid and hostile values. Every answer is 200 or a 4xx in the endpoint's
error shape (keel's ``{"error": {"code", "message", "hint", ...}}``, MLflow's
``{"error_code", "message"}``), never a 5xx or a dropped connection, and the
server still answers a normal search afterwards.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.server import create_app
from keel.services.auth import AuthStore
from servers import free_port

API = "/api/v1"
MLFLOW = "/api/2.0/mlflow"
KEYS = 40  # params k0..k39 on every run: enough for the 31-key sort that crashed SQLite
RUNS = 3

_SERVE = """
import sys
import uvicorn
from keel.server import create_app
app = create_app(sys.argv[1], sys.argv[2])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
"""


@dataclass
class Live:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client
    experiment: str

    def alive(self) -> None:
        """The process runs and answers a normal search with every run."""
        assert self.process.poll() is None, f"the server died ({self.process.returncode}): {self.log.read_text()}"
        found = self.client.get(f"{API}/runs", params={"project": "alpha", "order_by": "params.k0 desc"})
        assert found.status_code == 200, found.text
        assert len(found.json()["runs"]) == RUNS
        mlflow = self.client.post(f"{MLFLOW}/runs/search", json={"experiment_ids": [self.experiment]})
        assert mlflow.status_code == 200, mlflow.text
        assert len(mlflow.json()["runs"]) == RUNS


def _start(folder: Path, store: str, objects: str) -> tuple[str, subprocess.Popen[bytes], Path]:
    port = free_port()
    log = folder / f"server-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, store, objects, str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}{API}/health", timeout=1).status_code == 200:
                return url, process, log
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the server did not answer within 30 s: {log.read_text()}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("fuzz")
    store, objects = f"sqlite:///{folder / 'keel.db'}", str(folder / "objects")
    app = create_app(store, objects)  # creates the schema; the users are made here, offline
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    auth.create_user("rita", is_admin=False)
    auth.grant("rita", "alpha", "reader", "test")
    auth.grant("rita", "@registries", "reader", "test")
    root = auth.create_token("root", "test")[0]
    reader = auth.create_token("rita", "test")[0]
    app.state.keel.store.close()
    url, process, log = _start(folder, store, objects)
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {root}"}, timeout=30)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {reader}"}, timeout=30)
    try:
        for project in ("alpha", "beta"):
            assert admin.post(f"{API}/projects", json={"name": project}).status_code == 201
        for i in range(RUNS):
            run = admin.post(f"{API}/runs", json={"project": "alpha", "name": f"r{i}"}).json()["run_id"]
            body = {
                "params": {f"k{k}": i * k for k in range(KEYS)},
                "metrics": [{"key": f"m{k}", "value": i / (k + 1)} for k in range(5)],
                "tags": {"team": "search" if i % 2 else "chat"},
            }
            assert admin.post(f"{API}/runs/{run}/batch", json=body).status_code == 200
        found = client.get(f"{MLFLOW}/experiments/get-by-name", params={"experiment_name": "alpha"})
        assert found.status_code == 200, found.text
        server = Live(url, process, log, client, found.json()["experiment"]["experiment_id"])
        server.alive()
        yield server
    finally:
        admin.close()
        client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _keel_error(response: httpx.Response) -> None:
    """200, or a 4xx in keel's one error shape."""
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert set(body) == {"error"}, body
        assert {"code", "message", "hint"} <= set(body["error"]) <= {"code", "message", "hint", "details"}, body
        assert body["error"]["message"] and body["error"]["code"]


def _mlflow_error(response: httpx.Response) -> None:
    """200, or a 4xx in MLflow's error shape."""
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert set(body) == {"error_code", "message"}, body
        assert body["error_code"] and body["message"]


# -- the reported attacks, one by one --------------------------------------------------------------
ATTACKS = {
    "deep parentheses": "(" * 329 + "params.k1 > 1" + ")" * 329,
    "900 nots": "not " * 900 + "params.k1 > 1",
    "2**63": f"params.k1 = {2**63}",
    "start_time > true": "start_time > true",
    # 2,500 terms (52k characters: a URL holds at most 64k); the Python API test has 5,000.
    "a 2,500-term chain": " or ".join(f"params.k{i % KEYS} = {i}" for i in range(2500)),
    "21 keys": " and ".join(f"params.k{i} >= 0" for i in range(21)),
    "1e400": "metrics.m0 < 1e400",
}


def test_31_sort_keys_are_refused_and_the_server_lives(live: Live) -> None:
    keys = [f"params.k{i}" for i in range(31)]
    response = live.client.get(f"{API}/runs", params={"project": "alpha", "order_by": keys})
    _keel_error(response)
    assert response.status_code == 400 and "at most 10" in response.json()["error"]["message"]
    response = live.client.post(f"{MLFLOW}/runs/search", json={"experiment_ids": [live.experiment], "order_by": keys})
    _mlflow_error(response)
    assert response.status_code == 400 and "at most 10" in response.json()["message"]
    ten = live.client.get(f"{API}/runs", params={"project": "alpha", "order_by": [f"{k} desc" for k in keys[:10]]})
    assert [r["name"] for r in ten.json()["runs"]] == [f"r{i}" for i in reversed(range(RUNS))]
    live.alive()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_hostile_filters_are_400_on_both_apis(live: Live, name: str) -> None:
    text = ATTACKS[name]
    response = live.client.get(f"{API}/runs", params={"project": "alpha", "filter": text})
    _keel_error(response)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_filter", "invalid_input")
    response = live.client.post(f"{MLFLOW}/runs/search", json={"experiment_ids": [live.experiment], "filter": text})
    _mlflow_error(response)
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    live.alive()


def test_a_lone_surrogate_in_a_json_body_is_a_400(live: Live) -> None:
    body = '{"experiment_ids": ["' + live.experiment + '"], "filter": "params.k1 = \'\\ud800\'"}'
    response = live.client.post(
        f"{MLFLOW}/runs/search", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    _mlflow_error(response)
    assert response.status_code == 400 and "surrogate" in response.json()["message"]
    live.alive()


# -- hypothesis ------------------------------------------------------------------------------------
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # a URL cannot carry a surrogate
_FIELDS = st.one_of(
    st.sampled_from(
        ["metrics.m0", "metrics.m4", "params.k1", "params.k39", "tags.team", "status", "start_time", "end_time"]
        + ["name", "run_id", "attributes.run_name", "created", "user_id", "tags.`mlflow.runName`", "bogus"]
    ),
    st.integers(0, 60).map(lambda k: f"params.k{k}"),
    _TEXT.map(lambda s: f"tags.`{s}`"),
)
_LITERALS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(["true", "false", "null", "1e400", "'FINISHED'", "'RUNNING'", "'finished'"]),
    _TEXT.map(lambda s: "'" + s.replace("'", "''") + "'"),
)
_OPS = st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "like", "not like", "ilike", "in", "not in", "is"])


@st.composite
def _comparison(draw: Any) -> str:
    field, op = draw(_FIELDS), draw(_OPS)
    if op in ("in", "not in"):
        return f"{field} {op} ({', '.join(draw(st.lists(_LITERALS, min_size=1, max_size=4)))})"
    if op == "is":
        return f"{field} is {draw(st.sampled_from(['null', 'not null']))}"
    return f"{field} {op} {draw(_LITERALS)}"


_FILTERS = st.one_of(
    st.none(),
    _TEXT,
    st.recursive(
        _comparison(),
        lambda inner: st.one_of(
            st.tuples(inner, st.sampled_from([" and ", " or ", " AND "]), inner).map("".join),
            inner.map(lambda s: f"({s})"),
            inner.map(lambda s: f"not {s}"),
        ),
        max_leaves=25,
    ),
    st.tuples(st.integers(0, 400), _comparison()).map(lambda t: "(" * t[0] + t[1] + ")" * t[0]),
    st.tuples(st.integers(1, 300), _comparison()).map(lambda t: " or ".join([t[1]] * t[0])),
)
_CLAUSES = st.one_of(
    st.tuples(_FIELDS, st.sampled_from(["", " asc", " desc", " DESC", " up"])).map("".join),
    _TEXT,
)
_TOKENS = st.one_of(
    st.none(),
    _TEXT,
    st.integers(-(2**80), 2**80).map(lambda n: base64.urlsafe_b64encode(json.dumps({"offset": n}).encode()).decode()),
    st.integers(0, 10).map(lambda n: base64.urlsafe_b64encode(str(n).encode()).decode()),
    st.sampled_from([base64.urlsafe_b64encode(b'{"offset": 1e400}').decode(), "e30=", "W10=", "x" * 2000]),
)


def _mostly(valid: Any, hostile: Any) -> Any:
    """``valid`` three times in four, else ``hostile``: most examples reach the search itself
    (a bad project or page size would answer before the filter is read)."""
    return st.integers(0, 3).flatmap(lambda n: hostile if n == 0 else valid)


_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(
    project=_mostly(st.just([]) | st.just(["alpha"]), st.lists(st.sampled_from(["alpha", "beta", "nope"]) | _TEXT)),
    filter_=_FILTERS,
    order_by=_mostly(st.lists(_CLAUSES, max_size=4), st.lists(_CLAUSES, min_size=9, max_size=35)),
    limit=_mostly(st.none() | st.integers(1, 50), st.integers(-(2**80), 2**80) | _TEXT),
    page_token=_mostly(st.none(), _TOKENS),
    deleted=_mostly(st.none(), st.sampled_from(["exclude", "include", "only", "all"])),
)
def test_fuzzed_keel_run_searches_answer_200_or_4xx(
    live: Live, project: list[str], filter_: Any, order_by: list[str], limit: Any, page_token: Any, deleted: Any
) -> None:
    params: dict[str, Any] = {"project": project or ["alpha"], "order_by": order_by}
    for key, value in (("filter", filter_), ("limit", limit), ("page_token", page_token), ("deleted", deleted)):
        if value is not None:
            params[key] = value
    _keel_error(live.client.get(f"{API}/runs", params=params))
    assert live.process.poll() is None, live.log.read_text()


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@_SETTINGS
@given(
    experiment_ids=_mostly(st.just(["alpha"]), st.lists(st.sampled_from(["alpha", "0", "999"]) | _TEXT, max_size=3)),
    filter_=_mostly(_FILTERS, st.text(max_size=30) | _JSON),
    order_by=_mostly(
        st.lists(_CLAUSES, max_size=4),
        st.lists(_CLAUSES | st.text(max_size=20), min_size=9, max_size=35) | _JSON,
    ),
    max_results=_mostly(
        st.none() | st.integers(1, 50),
        st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=10) | _JSON,
    ),
    page_token=_mostly(st.none(), _TOKENS | _JSON),
    run_view_type=_mostly(
        st.none() | st.sampled_from(["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]), st.sampled_from(["bogus", 1]) | _JSON
    ),
)
def test_fuzzed_mlflow_run_searches_answer_200_or_4xx(
    live: Live,
    experiment_ids: Any,
    filter_: Any,
    order_by: Any,
    max_results: Any,
    page_token: Any,
    run_view_type: Any,
) -> None:
    ids = [live.experiment if i == "alpha" else i for i in experiment_ids]
    body: dict[str, Any] = {"experiment_ids": ids or [live.experiment]}
    for key, value in (
        ("filter", filter_),
        ("order_by", order_by),
        ("max_results", max_results),
        ("page_token", page_token),
        ("run_view_type", run_view_type),
    ):
        if value is not None:
            body[key] = value
    # json.dumps writes NaN/Infinity and escapes lone surrogates: the server's JSON reader takes both.
    content = json.dumps(body).encode()
    response = live.client.post(f"{MLFLOW}/runs/search", content=content, headers={"Content-Type": "application/json"})
    _mlflow_error(response)
    assert live.process.poll() is None, live.log.read_text()


# -- the service RPC and MLflow's other searches ----------------------------------------------------
def test_the_rpc_search_refuses_31_sort_keys_and_a_lone_surrogate(live: Live) -> None:
    keys = [f"params.k{i}" for i in range(31)]
    response = live.client.post(
        f"{API}/svc/tracking/search_runs", json={"kwargs": {"projects": ["alpha"], "order_by": keys}}
    )
    _keel_error(response)
    assert response.status_code == 400 and "at most 10" in response.json()["error"]["message"]
    body = '{"kwargs": {"projects": ["alpha"], "filter": "params.k1 = \'\\ud800\'"}}'
    response = live.client.post(
        f"{API}/svc/tracking/search_runs", content=body.encode(), headers={"Content-Type": "application/json"}
    )
    _keel_error(response)
    assert response.status_code == 400
    live.alive()


@_SETTINGS
@given(
    filter_=_mostly(_FILTERS, _JSON),
    order_by=_mostly(st.lists(_CLAUSES, max_size=4), st.lists(_CLAUSES, min_size=9, max_size=35) | _JSON),
    limit=_mostly(st.integers(1, 50), st.integers(-(2**80), 2**80) | _JSON),
    page_token=_mostly(st.none(), _TOKENS | _JSON),
)
def test_fuzzed_rpc_run_searches_answer_200_or_4xx(
    live: Live, filter_: Any, order_by: Any, limit: Any, page_token: Any
) -> None:
    kwargs = {"projects": ["alpha"], "filter": filter_, "order_by": order_by, "limit": limit, "page_token": page_token}
    content = json.dumps({"kwargs": kwargs}).encode()
    response = live.client.post(
        f"{API}/svc/tracking/search_runs", content=content, headers={"Content-Type": "application/json"}
    )
    _keel_error(response)
    assert live.process.poll() is None, live.log.read_text()


def _url_text(value: Any) -> str:
    """``value`` as text a URL can carry (a lone surrogate cannot be encoded)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


_REGISTRY_FILTERS = st.one_of(
    _FILTERS,
    st.sampled_from(["name = 'm'", "name like 'm%'", "tags.`mlflow.prompt.is_prompt` != 'true'", "run_id = 'x'"]),
)


@_SETTINGS
@given(
    path=st.sampled_from(["experiments/search", "registered-models/search", "model-versions/search"]),
    filter_=_mostly(_REGISTRY_FILTERS, st.text(max_size=30) | _JSON),
    order_by=_mostly(
        st.lists(st.sampled_from(["name", "name DESC", "creation_time", "last_updated_timestamp ASC"]), max_size=3),
        st.lists(_CLAUSES | st.text(max_size=20), min_size=9, max_size=35) | _JSON,
    ),
    max_results=_mostly(st.none() | st.integers(1, 50), st.integers(-(2**80), 2**80) | st.floats() | _TEXT),
    page_token=_mostly(st.none(), _TOKENS),
)
def test_fuzzed_mlflow_registry_and_experiment_searches_answer_200_or_4xx(
    live: Live, path: str, filter_: Any, order_by: Any, max_results: Any, page_token: Any
) -> None:
    args = {"filter": filter_, "order_by": order_by, "max_results": max_results, "page_token": page_token}
    args = {key: value for key, value in args.items() if value is not None}
    if path == "experiments/search":  # a JSON body
        content = json.dumps(args).encode()
        response = live.client.post(f"{MLFLOW}/{path}", content=content, headers={"Content-Type": "application/json"})
    else:  # a query string: text only (lists repeat the key)
        query = {
            k: [_url_text(v) for v in value] if isinstance(value, list) else _url_text(value)
            for k, value in args.items()
        }
        response = live.client.get(f"{MLFLOW}/{path}", params=query)
    _mlflow_error(response)
    assert live.process.poll() is None, live.log.read_text()


def test_the_server_still_answers_after_the_fuzzing(live: Live) -> None:
    live.alive()
