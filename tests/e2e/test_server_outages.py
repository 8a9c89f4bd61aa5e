"""The team server through outages, and with credentials in its URLs (issue 26).

A dedicated PostgreSQL and S3 (moto) server are started for this module (the
session's are shared by other tests and never stopped here). The database URL
holds a password (a role created with one) and the S3 secret key is in the
server's environment; the server runs as a real uvicorn process.

- While PostgreSQL is stopped (``pg_ctl stop -m fast``) every API call answers 503
  with ``Retry-After`` and code ``unavailable`` naming ``database``; ``/health``
  answers 503 naming it, ``/live`` 200; once it is started again the same server
  answers 200 within seconds. The same for the object store (moto stopped).
- No reply, no server log line and no ``keel info`` output carries the password or
  the secret key, whatever error path is taken: constraint races, bad ids, outages.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_api import Server, bootstrap, start_server

from keel.core.hashing import hash_bytes
from keel.errors import Conflict, StoreError, Unavailable
from keel.services.health import check_health, known_error
from keel.services.workspace import open_store
from keel.transport import HttpClient
from servers import PostgresServer, S3Server

pytestmark = [pytest.mark.postgres, pytest.mark.s3]

API = "/api/v1"
PASSWORD = "s3cr3t-pw"
SECRET_KEY = "s3cr3t-key"
SECRET = "s3cr3t"  # in both: found in nothing a client or a log sees
KEEL = Path(sys.executable).with_name("keel")


@dataclass
class Site:
    """A dedicated PostgreSQL + S3, the URLs with credentials, and what every reply said."""

    pg: PostgresServer
    s3: S3Server
    folder: Path
    store: str
    objects: str
    bucket: str
    replies: list[str] = field(default_factory=list)

    # -- PostgreSQL ------------------------------------------------------------------------
    def pg_stop(self) -> None:
        assert self.pg.dir is not None
        self.pg._run("pg_ctl", "-D", str(self.pg.dir / "data"), "-m", "fast", "-w", "stop")

    def pg_start(self) -> None:
        assert self.pg.dir is not None
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.pg.port} -k {self.pg.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        data, log = str(self.pg.dir / "data"), str(self.pg.dir / "log")
        self.pg._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "30", "start")

    @contextlib.contextmanager
    def pg_down(self) -> Iterator[None]:
        self.pg_stop()
        try:
            yield
        finally:
            if not (self.pg.dir / "data" / "postmaster.pid").exists():  # type: ignore[operator]
                self.pg_start()

    # -- S3 ----------------------------------------------------------------------------------
    def s3_stop(self) -> None:
        self.s3._terminate()

    def s3_start(self) -> None:
        """moto again on the same port; it keeps nothing, so the bucket is made again (as if restored)."""
        assert self.s3.dir is not None
        port = self.s3.endpoint_url.rsplit(":", 1)[1]
        script = Path(sys.executable).with_name("moto_server")
        command = [str(script)] if script.is_file() else [sys.executable, "-m", "moto.server"]
        with open(self.s3.dir / "log", "ab") as log:
            self.s3._process = subprocess.Popen(
                [*command, "-H", "127.0.0.1", "-p", port],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.s3.dir,
            )
        assert self.s3._wait_ready(), "moto did not start again"
        self.s3.client.create_bucket(Bucket=self.bucket)

    @contextlib.contextmanager
    def s3_down(self) -> Iterator[None]:
        self.s3_stop()
        try:
            yield
        finally:
            if self.s3._process is None:
                self.s3_start()

    # -- replies -----------------------------------------------------------------------------
    def seen(self, response: httpx.Response) -> httpx.Response:
        """Keep what the client saw (status line, headers, body) to look for secrets at the end."""
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.replies.append(f"{response.status_code}\n{headers}\n{response.text}")
        return response


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("outages")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "keel-test-id")
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        pg, s3 = PostgresServer(), S3Server()
        try:
            pg.start()
            s3.start()
            with pg._admin() as conn:
                conn.execute(f"CREATE ROLE keelpw LOGIN PASSWORD '{PASSWORD}'")
                conn.execute("CREATE DATABASE keelpw OWNER keelpw")
            store = f"postgresql+psycopg://keelpw:{PASSWORD}@127.0.0.1:{pg.port}/keelpw"
            bucket = s3.create_bucket()
            objects = f"s3://{bucket}/objects?endpoint_url={s3.endpoint_url}"
            yield Site(pg, s3, folder, store, objects, bucket)
        finally:
            s3.stop()
            pg.stop()


@dataclass
class Running:
    site: Site
    server: Server
    token: str

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        with httpx.Client(base_url=self.server.url + API, timeout=60) as client:
            return self.site.seen(client.request(method, path, headers=headers, **kwargs))

    def anonymous(self, path: str) -> httpx.Response:
        with httpx.Client(base_url=self.server.url + API, timeout=60) as client:
            return self.site.seen(client.get(path))


@pytest.fixture(scope="module")
def running(site: Site) -> Iterator[Running]:
    token = bootstrap(site.store, "root", objects=site.objects)
    server = start_server(site.store, site.folder, site.objects, "--log-level", "info")
    try:
        yield Running(site, server, token)
    finally:
        server.stop()
        log = server.log.read_text(errors="replace")
        assert SECRET not in log, "the server log holds a secret"


def _wait_until(check: Callable[[], bool], seconds: float) -> float:
    """Poll ``check`` until it holds; the seconds it took (fails after ``seconds``)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s")


def _unavailable(response: httpx.Response, dependency: str) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable", error
    assert error["details"]["dependency"] == dependency, error
    assert error["details"]["retry_after"] == int(response.headers["retry-after"])
    return dict(error)


def _no_secret_in(texts: list[str]) -> None:
    leaked = [text for text in texts if SECRET in text]
    assert not leaked, leaked[:3]


# -- no credential in any reply or log line ------------------------------------------------------
def test_keel_info_masks_the_database_password(site: Site) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(KEEL_URI=site.store, KEEL_OBJECTS=site.objects, KEEL_CONFIG_DIR=str(site.folder / "cfg"))
    for args in (["info"], ["info", "--json"]):
        out = subprocess.run([str(KEEL), *args], cwd=site.folder, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        assert SECRET not in out.stdout + out.stderr
        assert f"keelpw:***@127.0.0.1:{site.pg.port}/keelpw" in out.stdout


def test_driver_errors_become_keel_errors_without_the_url(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    from keel.meta.dbapi import ConstraintViolation

    store = open_store(site.store, site.objects, cached=False)
    try:
        assert store.describe()["database"] == f"postgresql+psycopg://keelpw:***@127.0.0.1:{site.pg.port}/keelpw"
        insert = "INSERT INTO projects (name, description, created_at) VALUES ('dup', '', 0)"
        with store.db.write() as conn:
            conn.exec_driver_sql(insert)
        # A unique-key violation through the pooled connections: keel's ConstraintViolation, which
        # the server answers as a Conflict (409) with neither the URL nor the row.
        with pytest.raises(ConstraintViolation) as raised, store.db.write() as conn:
            conn.exec_driver_sql(insert)
        conflict = known_error(raised.value)
        assert isinstance(conflict, Conflict) and "projects_name" in conflict.message
        assert "postgresql" not in conflict.message and "dup" not in conflict.message
        # The same through the hot write path's raw cursor.
        with pytest.raises(Conflict) as raw, store.db.raw_write() as cur:
            cur.execute(store.db.sql(insert))
        assert "postgresql" not in str(raw.value)
        # Other driver errors name the database, masked.
        with pytest.raises(StoreError) as other, store.db.raw_read() as cur:
            cur.execute("SELECT * FROM no_such_table")
        assert f"keelpw:***@127.0.0.1:{site.pg.port}" in other.value.message
        messages = [str(raised.value), str(conflict), str(raw.value), str(other.value)]
    finally:
        store.close()
    _no_secret_in(messages + [record.getMessage() for record in caplog.records])


def test_concurrent_registrations_and_bad_ids_never_leak_or_500(running: Running) -> None:
    site = running.site
    assert running.call("POST", "/projects", json={"name": "alpha"}).status_code == 201

    def register(name: str, i: int, **extra: str) -> httpx.Response:
        body = {"template": f"v{i} {{{{ x }}}}", "changelog": f"try {i}", **extra}
        return running.call("POST", f"/prompts/{name}/versions", json=body)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        same = list(pool.map(lambda i: register("race", i, version="1.0.0"), range(16)))
        bumped = list(pool.map(lambda i: register("bumped", i), range(16)))
    # One registration of 1.0.0 wins; the others are refused (it does not increase on 1.0.0),
    # none is a 500 and none names the database.
    assert sum(r.status_code == 201 for r in same) == 1
    assert {r.status_code for r in same} <= {201, 400, 409}, [r.text for r in same if r.status_code >= 500]
    assert {r.status_code for r in bumped} <= {201, 409}, [r.text for r in bumped if r.status_code >= 500]

    assert running.call("GET", "/objects/not-an-id").status_code == 400
    missing = "0" * 64
    assert running.call("GET", f"/objects/{missing}").status_code == 404
    assert running.call("HEAD", f"/objects/{missing}").status_code == 404
    wrong = running.call("PUT", f"/objects/{missing}", content=b"not that")
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_input"
    assert running.call("GET", "/runs/nonexistent-run").status_code == 400  # not a run id
    assert running.call("GET", f"/runs/{'ab' * 16}").status_code == 404
    _no_secret_in(site.replies)


# -- outages ---------------------------------------------------------------------------------------
def test_a_database_outage_is_503_and_the_server_recovers_by_itself(running: Running) -> None:
    site = running.site
    run = running.call("POST", "/runs", json={"project": "alpha", "name": "before"})
    assert run.status_code == 201, run.text
    run_id = run.json()["run_id"]
    assert running.anonymous("/health").json()["checks"] == {"database": "ok", "objects": "ok"}

    with site.pg_down():
        for method, path, body in (
            ("GET", "/projects", None),
            ("GET", f"/runs/{run_id}", None),
            ("POST", "/runs", {"project": "alpha"}),
            ("POST", "/prompts/down/versions", {"template": "hi"}),
            ("GET", "/prompts", None),
        ):
            error = _unavailable(running.call(method, path, json=body), "database")
            assert "database" in error["message"]
        health = running.anonymous("/health")
        assert health.status_code == 503 and int(health.headers["retry-after"]) >= 1
        assert health.json()["status"] == "unavailable" and health.json()["failing"] == ["database"]
        assert health.json()["checks"] == {"database": "unavailable", "objects": "ok"}
        live = running.anonymous("/live")
        assert live.status_code == 200 and live.json()["status"] == "alive"

    took = _wait_until(lambda: running.anonymous("/health").status_code == 200, 15)
    assert took < 10
    assert running.call("GET", f"/runs/{run_id}").status_code == 200
    after = running.call("POST", "/runs", json={"project": "alpha", "name": "after"})
    assert after.status_code == 201, after.text
    _no_secret_in(site.replies)


def test_the_keel_client_retries_a_503_until_the_database_is_back(running: Running) -> None:
    site = running.site
    site.pg_stop()
    restarted = threading.Timer(1.5, site.pg_start)
    restarted.start()
    try:
        with HttpClient(running.server.url, running.token, retries=5) as client:
            start = time.monotonic()
            projects = client.call("GET", "/api/v1/projects")
        assert "alpha" in [p["name"] for p in projects]
        assert time.monotonic() - start >= 1.0  # it waited (Retry-After) and asked again
    finally:
        restarted.join()
        assert (site.pg.dir / "data" / "postmaster.pid").exists()  # type: ignore[operator]


def test_an_object_store_outage_is_503_and_the_server_recovers_by_itself(running: Running) -> None:
    site = running.site
    run_id = running.call("POST", "/runs", json={"project": "alpha"}).json()["run_id"]
    stored = running.call("PUT", f"/runs/{run_id}/artifacts/a.txt", content=b"stored before")
    assert stored.status_code == 201, stored.text
    oid = stored.json()["oid"]

    with site.s3_down():
        health = running.anonymous("/health")
        assert health.status_code == 503 and int(health.headers["retry-after"]) >= 1
        assert health.json()["failing"] == ["objects"]
        assert health.json()["checks"] == {"database": "ok", "objects": "unavailable"}
        assert running.anonymous("/live").status_code == 200
        upload = running.call("PUT", f"/runs/{run_id}/artifacts/b.txt", content=b"during the outage")
        assert "object store" in _unavailable(upload, "objects")["message"]
        data = b"x" * 3000
        put = running.call("PUT", f"/objects/{hash_bytes(data)}", content=data)
        _unavailable(put, "objects")
        _unavailable(running.call("GET", f"/objects/{oid}"), "objects")
        assert running.call("GET", f"/runs/{run_id}").status_code == 200  # the database still answers

    _wait_until(lambda: running.anonymous("/health").status_code == 200, 15)
    again = running.call("PUT", f"/runs/{run_id}/artifacts/b.txt", content=b"after the outage")
    assert again.status_code == 201, again.text
    got = running.call("GET", f"/runs/{run_id}/artifacts/b.txt")
    assert got.status_code == 200 and got.content == b"after the outage"
    _no_secret_in(site.replies)


def test_health_check_in_process_names_each_failing_dependency(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    store = open_store(site.store, site.objects, cached=False)
    try:
        assert check_health(store).ok
        with site.pg_down(), site.s3_down():
            start = time.monotonic()
            found = check_health(store, timeout=2.0)
            assert time.monotonic() - start < 4
            assert found.failing == ["database", "objects"] and found.retry_after >= 1
            with pytest.raises(Unavailable) as raised:
                store.tracking.list_projects()
            assert raised.value.dependency == "database" and raised.value.http_status == 503
            with pytest.raises(Unavailable) as raised:
                store.objects.put_bytes(hashlib.sha256(b"x").digest())
            assert raised.value.dependency == "objects"
            texts = [*found.problems.values(), str(raised.value)]
        _wait_until(lambda: check_health(store).ok, 15)
    finally:
        store.close()
    _no_secret_in(texts + [record.getMessage() for record in caplog.records])
