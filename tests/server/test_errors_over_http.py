"""A KeelError raised in the server reaches the real client as the same error with its fields:
the server app on a real socket (uvicorn in a thread), keel's own HTTP client and keel.Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

import keel
from keel.core.filters import parse_filter
from keel.errors import FilterSyntaxError
from keel.sdk import session
from keel.sdk.session import get_session
from keel.server import create_app
from keel.services.auth import AuthStore
from keel.transport import HttpClient
from servers import free_port

BAD_FILTER = "metrics.acc >>> 1"


@dataclass
class Live:
    url: str
    token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder: Path = tmp_path_factory.mktemp("errors")
    app = create_app(f"sqlite:///{folder / 'keel.db'}", str(folder / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    token, _ = auth.create_token("root", "test")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(10)


def _expected() -> FilterSyntaxError:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(BAD_FILTER)
    return info.value


def _same(received: BaseException, expected: FilterSyntaxError) -> None:
    assert type(received) is FilterSyntaxError
    assert (received.text, received.position) == (BAD_FILTER, expected.position)
    assert received.message == expected.message and str(received) == str(expected)
    assert received.hint == expected.hint


def test_a_filter_error_of_the_rest_search_arrives_with_its_text_and_position(live: Live) -> None:
    with HttpClient(live.url, live.token) as http:
        with pytest.raises(FilterSyntaxError) as info:
            http.request("GET", "/api/v1/runs", params={"project": "alpha", "filter": BAD_FILTER})
        _same(info.value, _expected())
        with http.request("GET", "/api/v1/health") as response:  # and the client goes on working
            assert response.status == 200


def test_a_filter_error_of_a_remote_search_arrives_with_its_text_and_position(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_TOKEN", live.token)
    client = keel.Client(live.url)
    try:
        with pytest.raises(FilterSyntaxError) as info:
            client.search_runs("alpha", filter=BAD_FILTER)
        _same(info.value, _expected())
    finally:
        remote = get_session(live.url).remote
        session.reset()
        remote.close()
