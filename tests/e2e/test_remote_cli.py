"""The Python API and the ``keel`` CLI against a real keel server (``KEEL_URI=http://...``).

One uvicorn server (SQLite file + local objects) is shared by the module; a
script logs through the Python API, then every CLI group reads and changes the
same data, which the server's REST API shows too. One test repeats the basics
on PostgreSQL + S3. The scripts run as processes of their own; the CLI runs in-process
(see ``tests/cli_inprocess.py``), with the environment a user's shell would give it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_server_api import Server, start_server

from cli_inprocess import keel as run_keel
from keel.integrations.standin import StandInServer
from keel.services.auth import AuthStore
from keel.services.workspace import open_store

SCRIPT = """\
import keel
from keel import config, conversations, flags, models, prompts

with keel.start_run(project="demo", name="first") as run:
    run.log_params({"model": "gpt-4o", "temperature": 0.2})
    for step in range(3):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    run.log_metric("odd", float("nan"))
    run.log_artifact("notes.txt")
    run.log_table("samples", ["q", "a"], [["2+2", "4"]])
    assert run.table("samples").rows == (("2+2", "4"),)
    config.load("production").attach(run)
    prompts.register("greet", "Hello {{ name }}", changelog="first")
    prompts.register("greet", "Hi {{ name }}!", changelog="friendlier")
    prompts.set_alias("greet", "production", "1.0.0")
    assert str(prompts.load("greet@production").version) == "1.0.0"
    version = models.register("clf", f"runs:/{run.id}/notes.txt")
    models.set_alias("clf", "champion", version.version)
    flags.set("new-ui", rollout=25)
    conversations.log(
        conversation_id="c1",
        messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        model="gpt-4o",
    )
    conversations.feedback("c1", thumb="up")
conversations.flush()
client = keel.Client()
assert client.read_artifact(run.id, "notes.txt") == b"artifact body\\n"
assert client.get_run(run.id).params["temperature"] == 0.2
assert conversations.count() == 1
print(run.id)
"""


@dataclass
class Remote:
    server: Server
    folder: Path
    tokens: dict[str, str]
    run_id: str = ""

    def env(self, user: str = "root", **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(KEEL_URI=self.server.url, KEEL_TOKEN=self.tokens[user], KEEL_CONFIG_DIR=str(self.folder / "cfg"))
        env.update(extra)
        return env

    def keel(self, *args: str, user: str = "root", code: int = 0, env: dict[str, str] | None = None) -> str:
        out = run_keel(*args, cwd=self.folder, env=env or self.env(user))
        assert out.returncode == code, f"keel {' '.join(args)} -> {out.returncode}: {out.stdout}{out.stderr}"
        return out.stdout if code == 0 else out.stderr

    def api(self, path: str, user: str = "root") -> Any:
        with httpx.Client(headers={"Authorization": f"Bearer {self.tokens[user]}"}) as client:
            response = client.get(f"{self.server.url}/api/v1{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def _users(database: str, objects: str, grants: dict[str, str]) -> dict[str, str]:
    """Tokens of ``root`` (a site admin) and of one user per ``{name: role on every project}``."""
    store = open_store(database, objects, cached=False)  # creates the schema, as the server would
    try:
        auth = AuthStore(store.db)
        auth.create_user("root", is_admin=True)
        tokens = {"root": auth.create_token("root", "test")[0]}
        for name, role in grants.items():
            auth.create_user(name)
            tokens[name] = auth.create_token(name, "test")[0]
            auth.grant(name, "*", role, "root")
        return tokens
    finally:
        store.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    folder = tmp_path_factory.mktemp("remote")
    store, objects = f"sqlite:///{folder / 'server.db'}", str(folder / "server-objects")
    tokens = _users(store, objects, {"rita": "reader"})
    server = start_server(store, folder, objects)
    client = folder / "client"
    client.mkdir()
    (client / "notes.txt").write_text("artifact body\n")
    (client / "config").mkdir()
    (client / "config" / "base.yaml").write_text("llm:\n  model: gpt-4o\n  temperature: 0.1\n")
    (client / "config" / "production.yaml").write_text("llm:\n  temperature: 0.0\n")
    (client / "docs").mkdir()
    (client / "docs" / "a.md").write_text("Keel versions prompts and models.\n")
    (client / "docs" / "b.md").write_text("Flags roll features out to users.\n")
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(2)]
    (client / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    remote = Remote(server, client, tokens)
    try:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=client, capture_output=True, text=True, timeout=60, env=remote.env()
        )
        assert out.returncode == 0, out.stderr
        remote.run_id = out.stdout.strip().splitlines()[-1]
        yield remote
    finally:
        server.stop()


def test_the_script_logged_to_the_server_and_nothing_locally(remote: Remote) -> None:
    assert not (remote.folder / ".keel").exists()
    run = remote.api(f"/runs/{remote.run_id}")
    assert run["project"] == "demo" and run["params"] == {"model": "gpt-4o", "temperature": 0.2}
    assert run["context"]["argv"] == ["-c"]  # captured where the script ran
    paths = {a["path"] for a in remote.api(f"/runs/{remote.run_id}/artifacts")}
    assert "notes.txt" in paths and "config/production.json" in paths and any("samples" in p for p in paths)
    assert [p["name"] for p in remote.api("/prompts")] == ["greet"]
    assert remote.api("/models/clf")["aliases"] == {"champion": 1}


def test_runs_artifacts_projects_and_info(remote: Remote) -> None:
    info = remote.keel("info")
    assert remote.server.url in info and "root" in info
    assert remote.run_id[:8] in remote.keel("runs", "list", "--project", "demo")
    shown = json.loads(remote.keel("runs", "show", remote.run_id[:8], "--json"))
    assert shown["metrics"]["loss"] == pytest.approx(1 / 3)
    assert "notes.txt" in remote.keel("runs", "lineage", remote.run_id)
    remote.keel("artifacts", "get", remote.run_id, "notes.txt", "-o", "downloaded")
    assert (remote.folder / "downloaded" / "notes.txt").read_text() == "artifact body\n"
    remote.keel("projects", "create", "other")
    assert "other" in [p["name"] for p in remote.api("/projects")]
    remote.keel("runs", "delete", remote.run_id)
    assert remote.api(f"/runs/{remote.run_id}")["deleted"] is True
    remote.keel("runs", "restore", remote.run_id)


def test_prompts_models_flags_config(remote: Remote) -> None:
    assert "Hi" in remote.keel("prompts", "diff", "greet", "1.0.0", "1.0.1")
    remote.keel("prompts", "alias", "set", "greet", "production", "1.0.1", "--reason", "ship it")
    assert remote.api("/prompts/greet/versions/production")["version"] == "1.0.1"
    assert "root" in remote.keel("prompts", "alias", "history", "greet", "production")
    remote.keel("models", "stage", "clf", "1", "Staging")
    assert remote.api("/models/clf/versions/1")["stage"] == "Staging"
    assert "rollout 50%" in remote.keel("flags", "rollout", "new-ui", "50")
    assert "root" in remote.keel("flags", "history", "new-ui")
    assert "production" in remote.keel("config", "history")


def test_conversations_kb_llm_eval_and_ab(remote: Remote) -> None:
    assert "c1" in remote.keel("conversations", "list")
    assert "1" in remote.keel("conversations", "stats")
    remote.keel("conversations", "export", "--to", "dataset.jsonl")  # fetched from the server, written here
    (example,) = [json.loads(line) for line in (remote.folder / "dataset.jsonl").read_text().splitlines()]
    assert example["conversation_id"] == "c1" and example["output"] == "hello"
    remote.keel("kb", "create", "docs")
    assert "2 new" in remote.keel("kb", "add", "docs", "docs")
    remote.keel("kb", "commit", "docs", "-m", "first")
    assert "docs/a.md" in remote.keel("kb", "search", "docs", "prompts")
    (remote.folder / "calc.txt").write_text("{{ question }}")
    remote.keel("prompts", "register", "calc", "-f", "calc.txt", "-m", "first")
    (remote.folder / "eval.yaml").write_text(
        "project: calc\ndata: eval.jsonl\nprompts: [calc@1.0.0]\nmodels: [gpt-4, gpt-3.5-turbo]\n"
        "scorers: [{exact_match: {field: answer}}]\nmode: auto\n"
    )
    with StandInServer() as standin:
        result = json.loads(remote.keel("eval", "run", "eval.yaml", "--base-url", standin.base_url, "--json"))
    assert len(result["runs"]) == 2
    calls = json.loads(remote.keel("llm", "calls", "--json"))
    assert len(calls) == 4
    remote.keel("reproduce", result["runs"][0]["run_id"])  # replays the recorded calls from the server
    remote.keel("ab", "create", "exp", "--variant", "control", "--variant", "treatment:model=gpt-4o",
                "--weights", "0.5,0.5", "--metric", "converted")  # fmt: skip
    assert "treatment: model=gpt-4o" in remote.keel("ab", "start", "exp")


def test_local_only_commands_use_a_local_workspace_beside_the_server(remote: Remote) -> None:
    remote.keel("init")
    remote.keel("data", "add", "eval.jsonl")
    remote.keel("remote", "add", "-d", "origin", remote.server.url)
    assert "pushed" in remote.keel("data", "push")
    assert remote.server.url in remote.keel("info")  # runs and registries still live on the server
    error = remote.keel("verify", code=2)
    assert error.count("\n") == 1 and "keel server" in error


def test_dataset_versions_and_their_use_are_recorded_on_the_server(remote: Remote) -> None:
    if not (remote.folder / ".keel").exists():
        remote.keel("init")
    remote.keel("data", "add", "eval.jsonl")
    with httpx.Client(headers={"Authorization": f"Bearer {remote.tokens['root']}"}) as client:
        reply = client.post(f"{remote.server.url}/api/v1/svc/datasets/versions", json={"args": ["eval.jsonl"]})
    assert reply.status_code == 200, reply.text
    (version,) = [v["fields"] for v in reply.json()["result"]]
    assert version["path"] == "eval.jsonl" and version["kind"] == "file"
    assert version["oid"][:12] in remote.keel("data", "log", "eval.jsonl")
    script = (
        "import keel\nwith keel.start_run(project='demo') as run:\n    run.use_dataset('eval.jsonl')\nprint(run.id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=remote.folder, capture_output=True, text=True, timeout=60, env=remote.env()
    )
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert run_id[:8] in remote.keel("data", "log", "eval.jsonl")  # the run that used it, from the server


def test_a_workspace_initialized_with_a_server_url_works_against_it(remote: Remote, tmp_path: Path) -> None:
    env = remote.env()
    del env["KEEL_URI"]
    out = run_keel("init", "--store", remote.server.url, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    out = run_keel("runs", "list", cwd=tmp_path, env=env)
    assert out.returncode == 0 and remote.run_id[:8] in out.stdout, out.stderr


def test_a_reader_is_refused_writes_with_one_line(remote: Remote) -> None:
    assert remote.run_id[:8] in remote.keel("runs", "list", user="rita")
    error = remote.keel("projects", "create", "mine", user="rita", code=7)
    assert error.startswith("error: rita needs the writer role") and error.count("\n") == 1
    error = remote.keel("flags", "kill", "new-ui", user="rita", code=7)
    assert "registries" in error and error.count("\n") == 1
    assert "mine" not in [p["name"] for p in remote.api("/projects")]


def test_remote_runs_list_hints_name_the_command_to_type(remote: Remote) -> None:
    """Issue 17: a project the caller cannot see points at `keel projects list`, not at a REST route."""
    for user in ("root", "rita"):
        error = remote.keel("runs", "list", "--project", "no-such-project", user=user, code=3)
        assert error == "error: no project 'no-such-project' (list the projects you can see: keel projects list)\n"


def test_login_logout_round_trip(remote: Remote) -> None:
    env = remote.env()
    del env["KEEL_TOKEN"]
    assert "keel login" in remote.keel("runs", "list", env=env, code=7)
    assert "unknown API token" in remote.keel("login", "--token", "keel_forged", env=env, code=7)
    assert "logged in" in remote.keel("login", remote.server.url, "--token", remote.tokens["rita"], env=env)
    assert remote.run_id[:8] in remote.keel("runs", "list", env=env)
    assert "rita" in remote.keel("info", env=env)
    assert "logged out" in remote.keel("logout", env=env)
    remote.keel("runs", "list", env=env, code=7)


@pytest.mark.postgres
@pytest.mark.s3
def test_remote_on_postgres_and_s3(pg_url: str, s3_url: str, tmp_path: Path) -> None:
    tokens = _users(pg_url, s3_url, {})
    server = start_server(pg_url, tmp_path, s3_url)
    try:
        remote = Remote(server, tmp_path, tokens)
        (tmp_path / "notes.txt").write_text("artifact body\n")
        script = (
            "import keel\n"
            "with keel.start_run(project='pg') as run:\n"
            "    run.log_metrics({'acc': 0.5})\n"
            "    run.log_artifact('notes.txt')\n"
            "print(run.id)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=remote.env()
        )
        assert out.returncode == 0, out.stderr
        run_id = out.stdout.strip()
        assert remote.api(f"/runs/{run_id}")["metrics"] == {"acc": 0.5}
        remote.keel("artifacts", "get", run_id, "notes.txt", "-o", "back")
        assert (tmp_path / "back" / "notes.txt").read_text() == "artifact body\n"
    finally:
        server.stop()
