"""A write the server refuses is never silent, and loses only its own run's rows (issue 16).

A real ``python -m keel.server`` (SQLite + local objects) with a user ``wes`` who is a
writer on project ``mine`` only. Logging into project ``theirs`` is accepted at the
call (the rows are queued) and refused when the background writer sends them: the
refused run's ``finish()`` raises ``WriteFailed`` naming the run, the rows and the
cause; a script that leaves it to the exit prints one line on stderr and exits 1;
the valid run logged by the same process, through the same writer, keeps every point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_server_api import Server, start_server

from keel.services.auth import AuthStore
from keel.services.workspace import open_store

POINTS = 1_000


@dataclass
class Team:
    server: Server
    folder: Path
    tokens: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(KEEL_URI=self.server.url, KEEL_TOKEN=self.tokens[user], KEEL_CONFIG_DIR=str(self.folder / "cfg"))
        return env

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        headers = {"Authorization": f"Bearer {self.tokens['root']}"}
        with httpx.Client(base_url=f"{self.server.url}/api/v1", headers=headers, timeout=30) as client:
            response = client.get(f"/runs/{run_id}/metric-history", params={"key": key})
        assert response.status_code == 200, response.text
        body = response.json()
        return list(zip(body["steps"], body["values"], strict=True))

    def script(self, code: str, user: str = "wes") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(user),
        )


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    folder = tmp_path_factory.mktemp("team")
    database, objects = f"sqlite:///{folder / 'server.db'}", str(folder / "server-objects")
    store = open_store(database, objects, cached=False)  # creates the schema, as the server would
    try:
        auth = AuthStore(store.db)
        auth.create_user("root", is_admin=True)
        auth.create_user("wes")
        tokens = {"root": auth.create_token("root", "test")[0], "wes": auth.create_token("wes", "test")[0]}
        auth.grant("wes", "mine", "writer", "root")
    finally:
        store.close()
    server = start_server(database, folder, objects)
    client = folder / "client"
    client.mkdir()
    try:
        yield Team(server, client, tokens)
    finally:
        server.stop()


def test_a_refused_run_raises_at_finish_and_the_valid_run_keeps_every_point(team: Team) -> None:
    out = team.script(
        f"""
        import keel
        good = keel.start_run(project="mine", name="good")
        with keel.Client().start_run(project="theirs", name="refused") as refused:
            for step in range({POINTS}):
                good.log_metric("loss", 1 / (step + 1), step=step)
                if step < 3:
                    refused.log_metric("m", 1.0, step=step)
            try:
                refused.finish()
            except keel.WriteFailed as exc:
                print("raised", exc.run_id == refused.id, exc.rows, exc.cause_code, exc.message)
            else:
                print("finish() returned")
        good.finish()
        keel.flush()
        print(good.id)
        """
    )
    assert out.returncode == 0, out.stderr  # the failure was reported (and caught): nothing left for exit
    assert out.stderr == ""
    raised, good_id = out.stdout.strip().splitlines()
    words = raised.split(" ", 4)
    assert words[:3] == ["raised", "True", "5"], raised  # the new run, 3 metrics and its end
    assert words[3] in ("forbidden", "not_found"), raised
    assert "could not be written" in words[4] and "refused" in words[4], raised
    history = team.history(good_id, "loss")
    assert history == [(step, 1 / (step + 1)) for step in range(POINTS)]


def test_a_script_that_lost_rows_exits_non_zero_with_one_line(team: Team) -> None:
    out = team.script(
        f"""
        import keel
        refused = keel.start_run(project="theirs", name="left open")  # finished by the exit
        with keel.Client().start_run(project="mine", name="good") as good:
            for step in range({POINTS}):
                good.log_metric("loss", float(step), step=step)
                if step < 3:
                    keel.log_metric("m", 1.0, step=step)
        print(good.id, refused.id, flush=True)
        print("unflushed stdout is still written")
        """
    )
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    good_id, refused_id = out.stdout.splitlines()[0].split()
    assert lines[0].startswith(f"keel: 5 logged rows of run {refused_id[:8]} could not be written: "), lines[0]
    assert out.stdout.splitlines()[1] == "unflushed stdout is still written"
    assert team.history(good_id, "loss") == [(step, float(step)) for step in range(POINTS)]


def test_a_script_that_logs_only_where_it_may_exits_zero(team: Team) -> None:
    out = team.script(
        """
        import keel
        with keel.start_run(project="mine") as run:
            keel.log_metric("loss", 0.5)
        """
    )
    assert (out.returncode, out.stderr) == (0, "")
