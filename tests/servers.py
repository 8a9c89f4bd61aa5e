"""Real servers for the test session: PostgreSQL and an S3-protocol server.

Each server runs on 127.0.0.1 on a free port, keeps its files in a fresh
temporary folder, and is stopped (and its folder removed) by :meth:`stop`.
``tests/conftest.py`` starts them lazily, once per session, only when a test
asks for them.

When a server's program is truly absent the tests that need it are skipped
with the reason, except under CI (``CI`` set to anything but ``0``/``false``),
where they fail instead: CI must never pass by skipping. A server that is
present but fails to start always fails, with the tail of its log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["PostgresServer", "S3Server", "in_ci", "unavailable"]

PG_BIN = Path(os.environ.get("KEEL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT_S = 30.0
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def in_ci() -> bool:
    """True when running under CI, where a missing server is a failure."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the requesting tests, or fail them under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: integration servers are required, not skipped)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PostgresServer:
    """A throw-away PostgreSQL cluster (``initdb`` + ``pg_ctl``) with trust auth.

    As root, the programs run as the ``postgres`` user (``initdb`` refuses
    root) in a folder that user owns; otherwise as the current user.

    Attributes:
        url: SQLAlchemy URL of the ``postgres`` database, user ``keel``.
    """

    user = "keel"

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.port = 0
        self.url = ""
        self._as_user: str | None = None
        self._names = itertools.count(1)
        self._template: str | None = None  # a database migrated to keel's schema, copied by create_database

    # -- lifecycle --------------------------------------------------------
    def start(self) -> PostgresServer:
        """Create the cluster and start the server; raise RuntimeError on failure."""
        missing = [p for p in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / p).is_file()]
        if missing:
            unavailable(f"PostgreSQL is not installed: no {', '.join(missing)} in {PG_BIN}")
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' user to run initdb as")
            self._as_user = owner.pw_name
        self.dir = Path(tempfile.mkdtemp(prefix="keel-test-pg-"))
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.dir / "data"),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(_START_ATTEMPTS):
            self.port = free_port()
            # Durability is pointless for a cluster deleted at the end: trade it for speed.
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.dir / "data"),
                    "-o",
                    options,
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT_S)),
                    "start",
                )
                break
            except RuntimeError:
                if attempt == _START_ATTEMPTS - 1:
                    self.stop()
                    raise
        self.url = f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self) -> None:
        """Stop the server and delete its folder (safe to call twice)."""
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _run(self, program: str, *args: str) -> None:
        command = [str(PG_BIN / program), *args]
        if self._as_user is not None:
            command = (
                ["runuser", "-u", self._as_user, "--", *command]
                if shutil.which("runuser")
                else ["su", self._as_user, "-s", "/bin/sh", "-c", shlex.join(command)]
            )
        result = subprocess.run(
            command,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S * 2,
            env={**os.environ, "LC_ALL": "C"},
        )
        if result.returncode != 0:
            log = _tail(self.dir / "log") if self.dir else ""
            raise RuntimeError(
                f"PostgreSQL {program} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\nserver log:\n{log}"
            )

    # -- databases --------------------------------------------------------
    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            yield conn

    def create_database(self, migrated: bool = False) -> tuple[str, str]:
        """Create an empty database; return ``(name, SQLAlchemy URL)``.

        ``migrated``: with keel's schema and no rows of anyone's, as keel's first open of
        an empty database leaves it, copied from a template migrated once per server
        (``CREATE DATABASE ... TEMPLATE``: a few times faster than migrating each one).
        """
        if migrated and self._template is None:
            self._template = self._migrated_template()
        name = f"keel_test_{next(self._names)}"
        template = f' TEMPLATE "{self._template}"' if migrated else ""
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return name, self._url(name)

    def _url(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def _migrated_template(self) -> str:
        from keel.meta.engine import open_database
        from keel.meta.migrate import ensure_schema

        name = "keel_template"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        database = open_database(self._url(name))
        try:
            ensure_schema(database)
        finally:
            database.close()  # a template must have no connections when it is copied
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class S3Server:
    """moto's S3-protocol server in a child process.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``.
    """

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.endpoint_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._client: Any = None
        self._names = itertools.count(1)

    def start(self) -> S3Server:
        """Start the server and wait until it answers; raise RuntimeError on failure."""
        for module in ("moto.server", "flask", "werkzeug"):
            if importlib.util.find_spec(module) is None:
                unavailable(f"the S3 test server needs moto[server]: {module} is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="keel-test-s3-"))
        for attempt in range(_START_ATTEMPTS):
            port = free_port()
            self.endpoint_url = f"http://127.0.0.1:{port}"
            script = Path(sys.executable).with_name("moto_server")
            command = [str(script)] if script.is_file() else [sys.executable, "-m", "moto.server"]
            with open(self.dir / "log", "ab") as log:
                self._process = subprocess.Popen(
                    [*command, "-H", "127.0.0.1", "-p", str(port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                )
            if self._wait_ready():
                return self
            self._terminate()
            if attempt == _START_ATTEMPTS - 1:
                log = _tail(self.dir / "log")
                message = f"the S3 server did not start on {self.endpoint_url}:\n{log}"
                self.stop()
                raise RuntimeError(message)
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server and delete its folder (safe to call twice)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._terminate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def client(self) -> Any:
        """A boto3 S3 client for this server (shared; closed by :meth:`stop`)."""
        if self._client is None:
            import boto3

            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def create_bucket(self) -> str:
        """Create an empty bucket; return its name."""
        name = f"keel-test-{next(self._names)}"
        self.client.create_bucket(Bucket=name)
        return name
