"""``keel hooks ...`` as a user runs them in a workspace without a server (the CLI
in-process: see ``tests/cli_inprocess.py``), against a receiver on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from cli_inprocess import Result, keel_env
from cli_inprocess import keel as run_keel
from hook_receiver import Receiver

ENV = keel_env(KEEL_HOOKS_ALLOW_PRIVATE="1", KEEL_HOOKS_BACKOFF="30")


def keel(*args: str, cwd: Path, code: int | None = 0, env: dict[str, str] = ENV) -> Result:
    """``keel ARGS``; ``code=None``: it must fail with one line on stderr."""
    out = run_keel(*args, cwd=cwd, env=env)
    if code is None:
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
    else:
        assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
    return out


def test_add_test_list_deliver_and_deliveries(tmp_path: Path) -> None:
    keel("init", cwd=tmp_path)
    with Receiver() as receiver:
        added = keel("hooks", "add", receiver.url, "--event", "version.created", "--event", "alias.moved",
                     "--scope", "@registries", "--kind", "prompt", cwd=tmp_path).stdout  # fmt: skip
        secret = next(line.split(": ", 1)[1] for line in added.splitlines() if line.startswith("secret: "))
        assert secret.startswith("whsec_") and "not shown again" in added
        receiver.secret = secret

        tested = keel("hooks", "test", "1", cwd=tmp_path).stdout
        assert tested.startswith("delivered: HTTP 200") and receiver.received[0].verified

        listed = keel("hooks", "list", cwd=tmp_path).stdout
        assert receiver.url in listed and "@registries" in listed and secret not in listed
        assert json.loads(keel("hooks", "list", "--json", cwd=tmp_path).stdout)[0]["events"] == [
            "version.created",
            "alias.moved",
        ]

        (tmp_path / "p.txt").write_text("Hello {{name}}")
        keel("prompts", "register", "greet", "--file", "p.txt", "-m", "first", cwd=tmp_path)
        # no server here: the event waits in the queue until 'keel hooks deliver' (or 'keel ui') works it
        assert len(receiver.received) == 1
        delivered = keel("hooks", "deliver", "--json", cwd=tmp_path).stdout
        assert json.loads(delivered) == {"events": 1, "queued": 1, "delivered": 1, "retrying": 0, "failed": 0}
        got = receiver.wait_for(2)[1]
        assert got.verified and got.body["event"]["subject"] == {"kind": "prompt", "name": "greet", "version": "1.0.0"}

        receiver.plan = [500]
        keel("hooks", "test", "1", cwd=tmp_path, code=1)
        rows = json.loads(keel("hooks", "deliveries", "--json", cwd=tmp_path).stdout)
        assert [(r["event"], r["status"], r["status_code"]) for r in rows] == [
            ("hook.test", "pending", 500),
            ("version.created", "delivered", 200),
            ("hook.test", "delivered", 200),
        ]
        table = keel("hooks", "deliveries", "1", "--status", "pending", cwd=tmp_path).stdout
        assert "HTTP 500" in table and "version.created" not in table
        attempts = keel("hooks", "deliveries", "--attempts", str(rows[0]["id"]), cwd=tmp_path).stdout
        assert "500" in attempts

        keel("hooks", "remove", "1", cwd=tmp_path)
        assert "no webhooks" in keel("hooks", "list", cwd=tmp_path).stdout


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    keel("init", cwd=tmp_path)
    strict = keel_env()
    refused = keel("hooks", "add", "http://127.0.0.1:9/hook", cwd=tmp_path, code=None, env=strict)
    assert "loopback address: refused" in refused.stderr and "KEEL_HOOKS_ALLOW_PRIVATE=1" in refused.stderr
    unknown = keel("hooks", "add", "https://example.com/h", "--event", "run.deleted", cwd=tmp_path, code=None)
    assert "unknown event 'run.deleted'" in unknown.stderr
    missing = keel("hooks", "test", "42", cwd=tmp_path, code=None)
    assert "no webhook subscription 42" in missing.stderr and "keel hooks list" in missing.stderr
