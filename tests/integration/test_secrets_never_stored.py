"""No secret reaches storage or output, whatever path it is logged through.

Realistic secrets go through every path an application has: a config loaded inside a run
(its snapshot), params, tags, a run's error and command line, an OpenAI call recorded against
the stand-in server (``extra_headers`` and metadata), a conversation record and its feedback,
and, on a server over the same store, the REST batch route and the service API. Then none of
them may be found in the bytes of ``keel.db`` (after a checkpoint), in any file of the object
store, in what the CLI prints (``keel config show``, ``runs show``, ``llm calls``/``show``,
``conversations show``) or in what the server answers. Replay still finds the recording.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

import keel
from cli_inprocess import keel as run_keel
from keel.core.batch import WriteBatch
from keel.integrations.standin import StandInServer
from keel.sdk import llm
from keel.sdk import session as sessions
from keel.sdk.remote import wire_codec
from keel.sdk.workspace import init_workspace
from keel.server import create_app
from keel.services import context as run_context
from keel.services.auth import AuthStore

PG_PASSWORD = "Pg-Tr0ub4dor-and-3"
BEARER = "9f8e7d6c5b4a39281726354453627181aa"
SLACK = "xYzAbCdEfGhIjKlMnOpQrStU"
SENTRY_KEY = "5f2b8e1c9d7a4e3f8b6c1d2e3f4a5b6c"
OPENAI_KEY = "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78St90"
ANTHROPIC_KEY = "sk-ant-api03-q2W3e4R5t6Y7u8I9o0P1a2S3d4F5g6H7j8K9l0Z1"
AWS_ID = "AKIAZ7Q4XK2M9PL3VN8R"
AWS_SECRET = "kP9/xQ2vR7tY4uW1zA8bC5dE3fG6hJ0kL2mN4pQ7"
GITHUB = "ghp_R4nD0mT0k3nV4lu3Xy2Zw9Qa8Sb7Tc6Ud5Ve4"
SLACK_BOT = "xoxb-2048192837465-1029384756102-AbCdEfGhIjKlMnOpQrStUvWx"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
DISCORD = "AbC-dEf_GhIjKlMnOpQrStUvWxYz0123456789"
TAGGED = "Tagged-Value-With-No-Shape-42"
LISTED = "Listed-Per-Workspace-Value-7"
HEADER_KEY = "x-api-9d8c7b6a5f4e3d2c1b0a"
CLIENT_KEY = "sk-Zq3X9vB2nM7kL4pR8tW1yA6cE5hJ0gF3dS2aQ9wE8rT7"
SERVER_TOKEN = "ghs_x9Y8w7V6u5T4s3R2q1P0o9N8m7L6k5J4i3H2"

SECRETS = [
    PG_PASSWORD, BEARER, SLACK, SENTRY_KEY, OPENAI_KEY, ANTHROPIC_KEY, AWS_ID, AWS_SECRET, GITHUB, SLACK_BOT, JWT,
    DISCORD, TAGGED, LISTED, HEADER_KEY, CLIENT_KEY, SERVER_TOKEN,
]  # fmt: skip

CONFIG = f"""\
database_url: postgresql://app:{PG_PASSWORD}@db/prod
headers:
  Authorization: Bearer {BEARER}
alerts:
  slack: https://hooks.slack.com/services/T0A1B2C3D/B0E1F2G3H/{SLACK}
  discord: https://discord.com/api/webhooks/112233445566778899/{DISCORD}
sentry:
  url: https://{SENTRY_KEY}@o123456.ingest.sentry.io/0
llm:
  model: gpt-4o
  providers:
    - name: openai
      value: {OPENAI_KEY}
    - name: anthropic
      note: "use {ANTHROPIC_KEY} for claude"
aws: "{AWS_ID} {AWS_SECRET}"
ci: {GITHUB}
bot: {SLACK_BOT}
session: {JWT}
tagged: !secret {TAGGED}
tenant:
  internal_ref: {LISTED}
"""


def _grep(haystack: bytes | str, where: str) -> None:
    data = haystack.encode() if isinstance(haystack, str) else haystack
    found = [s for s in SECRETS if s.encode() in data]
    assert not found, f"{where} holds {found}"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    init_workspace(tmp_path)
    with open(tmp_path / ".keel" / "config.toml", "a") as fh:
        fh.write('\n[redaction]\nkeys = ["internal_ref"]\n')
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "production.yaml").write_text(CONFIG)
    # the command line a run records: a flag holding a key, a URL with a password
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", CLIENT_KEY, f"--db=postgresql://a:{PG_PASSWORD}@h/d"])
    run_context._static_context.cache_clear()
    yield tmp_path
    sessions.reset()
    run_context._static_context.cache_clear()


def _log_everything(server: StandInServer) -> tuple[str, str, str, str]:
    client = openai.OpenAI(base_url=server.base_url, api_key=CLIENT_KEY, max_retries=0)
    try:
        wrapped = llm.wrap(client, metadata={"alert_hook": f"https://hooks.slack.com/services/T0/B0/{SLACK}"})
        with keel.start_run(project="secrets", name="leaky", tags={"deploy": f"Bearer {BEARER}"}) as run:
            cfg = keel.config.load(env="production")
            assert cfg.database_url == f"postgresql://app:{PG_PASSWORD}@db/prod"  # the app gets its values
            run.log_param("db", cfg.database_url)
            run.log_params({"headers": {"Authorization": f"Bearer {BEARER}"}, "keys": [OPENAI_KEY, "plain"]})
            run.log_param("note", f"deploy with {GITHUB}")
            run.log_param("internal_ref", LISTED)
            run.set_tag("notify_url", f"https://hooks.slack.com/services/T0A1B2C3D/B0E1F2G3H/{SLACK}")
            run.set_tag("api_key", ANTHROPIC_KEY)
            run.set_tag("aws", f"{AWS_ID} {AWS_SECRET}")
            answer = wrapped.chat.completions.create(
                model="gpt-4",
                messages=[{"role": "user", "content": "What is 17 + 25?"}],
                temperature=0,
                extra_headers={"Authorization": f"Bearer {JWT}", "X-Api-Key": HEADER_KEY, "X-Trace": GITHUB},
                extra_keel={"dsn": f"https://{SENTRY_KEY}@o0.ingest.sentry.io/0"},
            )
            assert answer.choices[0].message.content
            conversation = keel.conversations.log(
                {
                    "conversation_id": "conv-1",
                    "messages": [
                        {"role": "user", "content": f"here is my key {OPENAI_KEY}, is it valid?"},
                        {"role": "assistant", "content": f"never share postgresql://app:{PG_PASSWORD}@db/prod"},
                    ],
                    "metadata": {"api_key": SLACK_BOT, "callback": f"https://discord.com/api/webhooks/1/{DISCORD}"},
                    "model": "gpt-4",
                },
                strict=True,
            )
            keel.conversations.feedback("conv-1", thumb="down", comment=f"it leaked {GITHUB}")
            run_id, request_hash = run.id, llm.last_call().request_hash  # type: ignore[union-attr]
        with pytest.raises(RuntimeError):
            with keel.start_run(project="secrets", name="fails") as failing:
                raise RuntimeError(f"cannot reach postgresql://app:{PG_PASSWORD}@db/prod with {OPENAI_KEY}")
        llm.flush()
        keel.conversations.flush()
        # replay still finds the recording (headers are not part of the request hash)
        replay = llm.wrap(client, mode="replay")
        again = replay.chat.completions.create(
            model="gpt-4",
            messages=[{"role": "user", "content": "What is 17 + 25?"}],
            temperature=0,
            extra_headers={"Authorization": f"Bearer {JWT}"},
        )
        assert again.choices[0].message.content == answer.choices[0].message.content
        assert conversation == "conv-1"
        return run_id, failing.id, request_hash, cfg.snapshot_hash
    finally:
        client.close()


def _checkpointed_bytes(folder: Path) -> bytes:
    db = folder / ".keel" / "keel.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    wal = db.with_name("keel.db-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def _objects(folder: Path) -> list[Path]:
    return [p for p in (folder / ".keel" / "objects").rglob("*") if p.is_file()]


def _cli(folder: Path, *args: str) -> str:
    out = run_keel(*args, cwd=folder)  # in-process, as the keel script (see tests/cli_inprocess.py)
    assert out.returncode == 0, f"keel {' '.join(args)}: {out.stderr}"
    return out.stdout + out.stderr


def test_no_secret_in_the_database_the_objects_the_cli_or_the_server(workspace: Path) -> None:
    with StandInServer() as server:
        run_id, failed_id, request_hash, snapshot = _log_everything(server)
    sessions.reset()

    # -- what is stored --------------------------------------------------------------------------
    _grep(_checkpointed_bytes(workspace), "keel.db")
    objects = _objects(workspace)
    assert objects  # the config snapshot, the recorded call's pack
    for path in objects:
        _grep(path.read_bytes(), f"object {path.name}")
    snapshot_text = next(p for p in objects if p.name == snapshot[2:] or p.name == snapshot).read_text()
    assert "postgresql://app:***@db/prod" in snapshot_text and "https://hooks.slack.com/services/***" in snapshot_text
    assert '"internal_ref":"***"' in snapshot_text and '"tagged":"***"' in snapshot_text and "gpt-4o" in snapshot_text

    # -- what the CLI prints ----------------------------------------------------------------------
    printed = {
        "config show": _cli(workspace, "config", "show", "--env", "production"),
        "config show --json": _cli(workspace, "config", "show", "--env", "production", "--json"),
        "config show --explain": _cli(workspace, "config", "show", "--env", "production", "--explain"),
        "runs show": _cli(workspace, "runs", "show", run_id),
        "runs show --json": _cli(workspace, "runs", "show", run_id, "--json"),
        "runs show (failed)": _cli(workspace, "runs", "show", failed_id, "--json"),
        "llm calls": _cli(workspace, "llm", "calls", "--run", run_id, "--json"),
        "llm show": _cli(workspace, "llm", "show", request_hash),
        "llm show --json": _cli(workspace, "llm", "show", request_hash, "--json"),
        "conversations show": _cli(workspace, "conversations", "show", "conv-1"),
        "conversations show --json": _cli(workspace, "conversations", "show", "conv-1", "--json"),
    }
    for command, text in printed.items():
        _grep(text, f"keel {command}")
    assert "postgresql://app:***@db/prod" in printed["config show"]
    shown = json.loads(printed["runs show --json"])
    assert shown["params"]["db"] == "postgresql://app:***@db/prod" and shown["params"]["internal_ref"] == "***"
    assert shown["params"]["headers.Authorization"] == "***" and shown["tags"]["api_key"] == "***"
    assert (
        shown["tags"]["notify_url"] == "https://hooks.slack.com/services/***"
        and shown["tags"]["deploy"] == "Bearer ***"
    )
    assert "--api-key" in shown["context"]["argv"] and "***" in shown["context"]["argv"]
    call = json.loads(printed["llm show --json"])
    assert call["request"]["extra_headers"] == {"Authorization": "***", "X-Api-Key": "***", "X-Trace": "***"}
    assert call["request"]["model"] == "gpt-4" and call["request"]["messages"][0]["content"] == "What is 17 + 25?"

    # -- a server over the same store: what it answers, and what its write paths store -------------
    app = create_app(f"sqlite:///{workspace / '.keel' / 'keel.db'}", str(workspace / ".keel" / "objects"))
    auth = AuthStore(app.state.keel.store.db)
    auth.create_user("root", is_admin=True)
    headers = {"Authorization": f"Bearer {auth.create_token('root', 'test')[0]}"}
    codec = wire_codec()

    def svc(service: str, method: str, *args: object, **kwargs: object) -> str:
        body = {"args": codec.encode(list(args)), "kwargs": codec.encode(kwargs)}
        response = client.post(f"/api/v1/svc/{service}/{method}", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.text

    with TestClient(app) as client:
        answers = {
            "GET run": client.get(f"/api/v1/runs/{run_id}", headers=headers).text,
            "GET failed run": client.get(f"/api/v1/runs/{failed_id}", headers=headers).text,
            "GET runs": client.get("/api/v1/runs", params={"project": "secrets"}, headers=headers).text,
            "svc llm.calls": svc("llm", "calls", run=run_id),
            "svc llm.get": svc("llm", "get", request_hash),
            "svc conversations.get": svc("conversations", "get", "conv-1"),
            "svc config.get": svc("config", "get", snapshot),
        }
        for what, text in answers.items():
            _grep(text, f"the server's answer to {what}")
        # writes that come in through the server: the REST batch route, and a raw batch over the
        # service API from a client that redacted nothing
        created = client.post("/api/v1/runs", json={"project": "secrets"}, headers=headers)
        new_run = created.json()["run_id"]
        body = {"params": {"dsn": f"https://{SENTRY_KEY}@o0.ingest.sentry.io/0", "bot": SLACK_BOT},
                "tags": {"token": SERVER_TOKEN, "link": f"https://hooks.slack.com/services/T/B/{SLACK}"}}  # fmt: skip
        assert client.post(f"/api/v1/runs/{new_run}/batch", json=body, headers=headers).status_code == 200
        raw = WriteBatch(
            params=[(new_run, "client_secret", "str", SERVER_TOKEN, False)],
            tags=[(new_run, "aws", f"{AWS_ID} {AWS_SECRET}")],
        )
        svc("tracking", "write_batch", raw)
        stored = client.get(f"/api/v1/runs/{new_run}", headers=headers)
        _grep(stored.text, "the server's answer for a run written through it")
        assert stored.json()["params"]["client_secret"] == "***"
    app.state.keel.store.close()
    _grep(_checkpointed_bytes(workspace), "keel.db, after the server's writes")
