"""``keel server ...`` and ``keel ui`` as a user and a supervisor run them.

The admin commands run against a real SQLite file, in-process through the ``keel``
script's entry point (``tests/cli_inprocess.py``); ``keel server start`` and
``keel ui`` run as real processes, and a signal to *their* pid must stop the
server and free its port (they exec the server, they do not start a child).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cli_inprocess import keel as run_keel
from keel.services.auth import AuthStore
from keel.services.workspace import open_store
from servers import free_port

KEEL = Path(sys.executable).with_name("keel")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses ps and POSIX signals")


def keel(*args: str, code: int = 0, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run ``keel ARGS``; its stdout (its stderr when it is expected to fail)."""
    out = run_keel(*args, cwd=cwd, input=stdin or "", env=_env())
    assert out.returncode == code, out.stdout + out.stderr
    return out.stdout if code == 0 else out.stderr


def _env() -> dict[str, str]:
    """This environment without a store it may name (the tests give theirs)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_SERVER_", "KEEL_URI", "KEEL_OBJECTS"))}


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'team.db'}"


def test_server_help_lists_its_commands() -> None:
    out = keel("server", "--help")
    assert "Usage: keel server" in out and "python -m keel.server" not in out
    for command in ("start", "admin", "user", "token", "grant", "revoke", "grants", "audit"):
        assert re.search(rf"^\s+{command}\s", out, re.M), f"{command} missing from:\n{out}"
    assert "create" in keel("server", "token", "--help") and "--store" in keel("server", "start", "--help")


def test_users_tokens_and_grants_on_a_sqlite_store(store: str, tmp_path: Path) -> None:
    out = keel("server", "admin", "create", "alice", "--store", store)
    admin_secret = out.strip().splitlines()[-1]
    assert admin_secret.startswith("keel_") and "shown once" in out
    assert "created user bob" in keel("server", "user", "create", "bob", "--store", store)
    created = json.loads(keel("server", "token", "create", "bob", "--name", "ci", "--expires-days", "30",
                              "--store", store, "--json"))  # fmt: skip
    assert created["user"] == "bob" and created["token"].startswith("keel_")

    tokens = {t["id"]: t for t in json.loads(keel("server", "token", "list", "--store", store, "--json"))}
    assert set(tokens) == {created["id"], next(t for t in tokens if tokens[t]["user"] == "alice")}
    assert tokens[created["id"]]["expires_at"] == created["expires_at"] and "token" not in tokens[created["id"]]
    # text shows times as ISO 8601 in UTC ("Z"), never epoch milliseconds; --json keeps the milliseconds
    expires = datetime.fromtimestamp(created["expires_at"] / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    table = keel("server", "token", "list", "bob", "--store", store)
    assert expires in table and str(created["expires_at"]) not in table
    assert re.search(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ .* never", keel("server", "token", "list", "alice",
                                                                                 "--store", store))  # fmt: skip
    audit_text = keel("server", "audit", "--store", store)
    assert f'"expires_at": "{expires}"' in audit_text and '"expires_at": "never"' in audit_text
    # no epoch milliseconds left anywhere in it (a number of its own: a token's hex id may hold 13 digits in a row)
    assert not re.search(r"\b\d{13}\b", audit_text)

    assert "bob is writer on chat" in keel("server", "grant", "bob", "chat", "writer", "--store", store)
    grants = json.loads(keel("server", "grants", "--store", store, "--json"))
    assert [(g["user"], g["project"], g["role"]) for g in grants] == [("bob", "chat", "writer")]
    db = open_store(store, "memory://", cached=False)
    try:
        principal = AuthStore(db.db).authenticate(created["token"])
        assert principal.name == "bob" and principal.grants == {"chat": "writer"}
        AuthStore(db.db).authenticate(admin_secret)
    finally:
        db.close()

    keel("server", "revoke", "bob", "chat", "--store", store)
    assert json.loads(keel("server", "grants", "--store", store, "--json")) == []
    error = keel("server", "revoke", "bob", "chat", "--store", store, code=3)
    assert error.count("\n") == 1 and error.startswith("error: user 'bob' has no role on 'chat'")

    keel("server", "token", "revoke", created["id"], "--store", store)
    assert "revoked" in keel("server", "token", "list", "bob", "--store", store)
    assert "the password of bob" in keel(
        "server", "user", "password", "bob", "--store", store, stdin="a long passphrase\n"
    )
    keel("server", "user", "disable", "bob", "--store", store)
    users = {u["name"]: u for u in json.loads(keel("server", "user", "list", "--store", store, "--json"))}
    assert users["alice"]["is_admin"] and users["bob"]["disabled"]

    audit = json.loads(keel("server", "audit", "--store", store, "--json"))
    assert [e["action"] for e in audit[:4]] == ["user.disable", "user.password", "token.revoke", "grant.revoke"]
    assert all(e["actor"].startswith("server-cli") for e in audit)


def test_store_comes_from_the_environment_or_the_error_says_how(store: str) -> None:
    error = keel("server", "user", "list", code=2)
    assert error.count("\n") == 1 and "KEEL_SERVER_STORE" in error
    out = run_keel("server", "admin", "create", "root", env={**_env(), "KEEL_SERVER_STORE": store})
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith("keel_"), out.stderr


def test_python_m_keel_server_keeps_the_admin_commands(store: str) -> None:
    """The old spelling hands over to ``keel server ...``, options before or after the command."""
    python = [sys.executable, "-m", "keel.server"]
    out = subprocess.run([*python, "admin", "create", "root", "--store", store], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith("keel_"), out.stderr
    out = subprocess.run([*python, "--store", store, "user", "list", "--json"], capture_output=True, text=True)
    assert out.returncode == 0 and [u["name"] for u in json.loads(out.stdout)] == ["root"], out.stderr


# -- the server runs in the process that was started ----------------------------------------------
def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes() -> list[tuple[int, int, str]]:
    """Every process: ``(pid, parent pid, command line)``."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=True).stdout
    return [(int(pid), int(ppid), args) for pid, ppid, args in (line.split(None, 2) for line in out.splitlines())]


def _serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)


def _stops_on(process: subprocess.Popen[bytes], sig: signal.Signals, port: int, log: Path) -> None:
    """``process`` is the server itself; ``sig`` to it stops it, frees the port and leaves nothing behind."""
    mine = {pid: args for pid, _, args in _processes() if pid == process.pid}
    assert "keel.server" in mine[process.pid]  # keel exec'd the server: same pid
    assert not [args for _, ppid, args in _processes() if ppid == process.pid and "keel.server" in args]
    os.kill(process.pid, sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:  # pragma: no cover - the failure being tested for
        process.kill()
        pytest.fail(f"the server ignored {sig.name}: {log.read_text()}")
    assert not _port_open(port), f"port {port} still served after {sig.name} to {process.pid}"
    assert not [p for p, _, args in _processes() if "keel.server" in args and str(port) in args]
    assert process.pid not in {pid for pid, _, _ in _processes()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_keel_server_start_stops_the_server(store: str, tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    command = [str(KEEL), "server", "start", "--store", store, "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        _serving(process, f"http://127.0.0.1:{port}/api/v1/health", log)
        argv = next(args for pid, _, args in _processes() if pid == process.pid)
        assert store not in argv  # the store URL (it may hold a password) travels in the environment
        _stops_on(process, sig, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_kill_keel_ui_stops_the_server(tmp_path: Path) -> None:
    keel("init", cwd=tmp_path)
    port = free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(KEEL), "ui", "--no-browser", "--port", str(port)],
            cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _serving(process, f"http://127.0.0.1:{port}/ui/", log)
        assert "keel ui:" in log.read_text()
        _stops_on(process, signal.SIGTERM, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
