"""Fixtures shared by every test.

- Every test runs in its own ``tmp_path`` (the current directory) with
  ``KEEL_URI`` and ``KEEL_OBJECTS`` unset, so nothing leaks in from the
  environment or from another test.
- ``postgres_server`` / ``s3_server`` start a real PostgreSQL and a real
  S3-protocol server (see ``servers.py``) the first time a test needs one,
  and stop them when the session ends.
- ``pg_url`` / ``s3_url`` give one test a fresh database / bucket.
- ``ws`` gives one test a whole keel store, copied from one made once per session:
  a ``.keel/`` folder that ``init_workspace`` made (byte for byte what it makes
  each time), or a PostgreSQL database migrated once (keel's migrations still run
  on every empty ``pg_url`` / ``database_url`` database).
- ``migrated_database_url`` is such a database with keel's schema already in it.
- ``database_url`` and ``object_store`` are parametrized over every backend,
  so one test body checks them all. The PostgreSQL and S3 cases carry the
  ``postgres`` / ``s3`` markers: ``pytest -m "not postgres and not s3"`` runs
  without any server.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from keel.objects import ObjectStore, open_object_store
from servers import PostgresServer, S3Server


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_URI", raising=False)
    monkeypatch.delenv("KEEL_OBJECTS", raising=False)


# -- servers (one per session) ------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as mp:
        # Dummy credentials for the local server; never a real account or endpoint.
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        server = S3Server()
        try:
            yield server.start()
        finally:
            server.stop()


# -- one fresh database / bucket per test --------------------------------------
@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A SQLAlchemy URL of a new, empty PostgreSQL database (dropped afterwards)."""
    name, url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def s3_url(s3_server: S3Server) -> str:
    """``s3://bucket/prefix?endpoint_url=...`` of a new, empty bucket."""
    bucket = s3_server.create_bucket()
    return f"s3://{bucket}/objects?{urlencode({'endpoint_url': s3_server.endpoint_url})}"


# -- every backend -----------------------------------------------------------
_DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _new_database(request: pytest.FixtureRequest, folder: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{folder / 'keel.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name, url = server.create_database()
    request.addfinalizer(lambda: server.drop_database(name))
    return url


@pytest.fixture(params=_DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty metadata database: a SQLite file, then PostgreSQL."""
    return _new_database(request, tmp_path)


@pytest.fixture(scope="module", params=_DATABASES)
def module_database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Like ``database_url``, shared by one module's tests (read-only tests of the same data)."""
    return _new_database(request, tmp_path_factory.mktemp("db"))


@pytest.fixture(params=_DATABASES)
def migrated_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like ``database_url``, with keel's schema and no rows, as keel's first open of an empty
    database leaves it: copied from one migrated once per session (for tests of what keel does
    with a store, not of how it creates one)."""
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("workspace_template") / "keel.db", tmp_path / "keel.db")
        return f"sqlite:///{tmp_path / 'keel.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name, url = server.create_database(migrated=True)
    request.addfinalizer(lambda: server.drop_database(name))
    return url


@pytest.fixture(
    params=["local", pytest.param("s3", marks=pytest.mark.s3), "memory"],
)
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An empty object store: a local folder, an S3 bucket, memory."""
    if request.param == "local":
        url = str(tmp_path / "objects")
    elif request.param == "s3":
        url = request.getfixturevalue("s3_url")
    else:
        url = "memory://"
    store = open_object_store(url)
    yield store
    store.close()


# -- a whole keel store for the SDK (sessions reset after each test) -----------
@pytest.fixture(scope="session")
def workspace_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.keel/`` folder made by ``init_workspace`` once per session (it holds no
    id of its own: every workspace it makes is the same bytes), for ``ws`` to copy."""
    from keel.sdk.workspace import init_workspace

    return init_workspace(tmp_path_factory.mktemp("workspace-template")) / ".keel"


@pytest.fixture(params=["sqlite-local", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])])
def ws(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current folder, set up so ``keel.*`` logs to a store: a ``.keel/``
    workspace (SQLite + local objects), then PostgreSQL + S3 through
    ``KEEL_URI``/``KEEL_OBJECTS``, as a team deployment would."""
    from keel.sdk import session as sessions

    if request.param == "sqlite-local":
        shutil.copytree(request.getfixturevalue("workspace_template"), tmp_path / ".keel")  # = init_workspace
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name, url = server.create_database(migrated=True)  # as keel's first open leaves it
        request.addfinalizer(lambda: server.drop_database(name))
        monkeypatch.setenv("KEEL_URI", url)
        monkeypatch.setenv("KEEL_OBJECTS", request.getfixturevalue("s3_url"))
    yield tmp_path
    sessions.reset()
