"""Registries under concurrency over REST: two real keel servers (``--workers 2`` each) on one
PostgreSQL, 8 client threads registering prompt and model versions of new names and moving
aliases and stages at once.

No reply is a 5xx; versions are unique and gap-free; every ref's reflog is an exact chain
(each move's ``old`` is the previous move's ``new``) ending at the ref's target; an alias
move with a stale ``expected`` target is a 409 naming the actual one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_api import Server, bootstrap, ok, start_server

pytestmark = pytest.mark.postgres

THREADS = 8
REGISTRATIONS = 5
MOVES = 10


@pytest.fixture
def servers(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[Server], str]]:
    objects = str(tmp_path / "objects")
    token = bootstrap(pg_url, objects=objects)  # creates and migrates the database first
    started: list[Server] = []
    try:
        for _ in range(2):
            started.append(start_server(pg_url, tmp_path, objects, "--workers", "2"))
        yield started, token
    finally:
        for server in started:
            server.stop()


def _in_threads(work: Any) -> list[tuple[str, int, str]]:
    """``work(thread, barrier, replies)`` in 8 threads started together; every reply as
    ``(what, status, body)``."""
    barrier = threading.Barrier(THREADS)
    replies: list[tuple[str, int, str]] = []
    failures: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            work(thread, barrier, replies)
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, failures
    return replies


def _chain(moves: list[dict[str, Any]], current: Any, start: Any = None) -> None:
    previous = start
    for i, move in enumerate(moves):
        assert move["old"] == previous, f"move {i} replaced {move['old']!r}, not {previous!r}: {moves}"
        previous = move["new"]
    assert previous == current


def test_two_servers_serialise_registrations_and_moves(servers: tuple[list[Server], str]) -> None:
    group, token = servers
    clients = [[server.client(token) for server in group] for _ in range(THREADS)]

    def call(thread: int, replies: list[Any], what: str, method: str, path: str, **kw: Any) -> httpx.Response:
        response = clients[thread][thread % 2].request(method, path, **kw)  # half the threads on each server
        replies.append((what, response.status_code, response.text))
        return response

    def register(thread: int, barrier: threading.Barrier, replies: list[Any]) -> None:
        barrier.wait(60)
        for i in range(REGISTRATIONS):
            body = {"template": f"({thread}-{i}) {{{{ q }}}}", "changelog": f"t{thread} #{i}"}
            call(thread, replies, "prompt", "POST", "/prompts/chat/versions", json=body)
            call(thread, replies, "model", "POST", "/models/clf/versions", json={"source": f"s3://m/{thread}-{i}"})

    replies = _in_threads(register)
    assert Counter((what, status) for what, status, _ in replies) == {
        ("prompt", 201): THREADS * REGISTRATIONS,
        ("model", 201): THREADS * REGISTRATIONS,
    }, [r for r in replies if r[1] != 201]
    admin = group[0].client(token)
    prompt_versions = [v["version"] for v in ok(admin.get("/prompts/chat/versions"))]
    assert sorted(prompt_versions, key=lambda v: int(v.split(".")[2])) == [
        f"1.0.{patch}" for patch in range(THREADS * REGISTRATIONS)
    ]
    model_versions = sorted(v["version"] for v in ok(admin.get("/models/clf/versions")))
    assert model_versions == list(range(1, THREADS * REGISTRATIONS + 1))

    stages = ("Staging", "Production", "Archived", "None")

    def move(thread: int, barrier: threading.Barrier, replies: list[Any]) -> None:
        barrier.wait(60)
        for i in range(MOVES):
            target = prompt_versions[(thread + i) % 4]
            call(thread, replies, "alias", "PUT", "/prompts/chat/aliases/production", json={"version": target})
            call(thread, replies, "new alias", "PUT", f"/prompts/chat/aliases/fresh-{i}", json={"version": target})
            number = 1 + (thread + i) % 3
            call(thread, replies, "model alias", "PUT", "/models/clf/aliases/champion", json={"version": number})
            stage = stages[(thread * 3 + i) % 4]
            body = {"stage": stage, "archive_existing": stage in ("Staging", "Production")}
            call(thread, replies, "stage", "PUT", f"/models/clf/versions/{number}/stage", json=body)

    replies = _in_threads(move)
    assert {status for _, status, _ in replies} == {200}, [r for r in replies if r[1] != 200]

    history = ok(admin.get("/prompts/chat/history", params={"alias": "production"}))
    assert len(history) == THREADS * MOVES
    _chain(history, ok(admin.get("/prompts/chat/versions/production"))["version"])
    for i in range(MOVES):
        fresh = ok(admin.get("/prompts/chat/history", params={"alias": f"fresh-{i}"}))
        assert len(fresh) == THREADS  # every creation of the new alias succeeded
        _chain(fresh, ok(admin.get(f"/prompts/chat/versions/fresh-{i}"))["version"])
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for entry in ok(admin.get("/models/clf/history")):
        by_ref.setdefault(entry["ref"], []).append(entry)
    assert len(by_ref["champion"]) == THREADS * MOVES
    _chain(by_ref.pop("champion"), str(ok(admin.get("/models/clf/aliases/champion"))["version"]))
    for ref, moves in by_ref.items():
        number = int(ref.partition(":")[2])
        _chain(moves, ok(admin.get(f"/models/clf/versions/{number}"))["stage"], start="None")

    # An optimistic move from a stale view is refused with the actual target.
    current = ok(admin.get("/prompts/chat/versions/production"))["version"]
    stale = next(v for v in prompt_versions if v != current)
    refused = admin.put("/prompts/chat/aliases/production", json={"version": stale, "expected": stale})
    assert refused.status_code == 409 and f"points at {current}" in refused.json()["error"]["message"]
    moved = ok(admin.put("/prompts/chat/aliases/production", json={"version": stale, "expected": current}))
    assert (moved["old"], moved["new"]) == (current, stale)
    gone = admin.delete("/models/clf/aliases/champion", params={"expected": "unset"})
    assert gone.status_code == 400  # not a version number
    champion = ok(admin.get("/models/clf/aliases/champion"))["version"]
    wrong = 1 + champion % 3
    assert admin.delete("/models/clf/aliases/champion", params={"expected": wrong}).status_code == 409
    assert ok(admin.delete("/models/clf/aliases/champion", params={"expected": champion}))["new"] is None
    stage = ok(admin.get("/models/clf/versions/1"))["stage"]
    other = next(s for s in stages if s != stage)
    body = {"stage": "Production", "expected": other}
    assert admin.put("/models/clf/versions/1/stage", json=body).status_code == 409
    assert ok(admin.put("/models/clf/versions/1/stage", json={"stage": "Production", "expected": stage}))

    for server in group:
        assert "Traceback" not in server.log.read_text()
