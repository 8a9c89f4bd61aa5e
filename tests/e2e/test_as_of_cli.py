"""``--at`` for knowledge bases, configs and flags from the command line, in several time zones.

A time copied from ``keel kb log``, ``keel config history`` or ``keel flags history`` (printed in
UTC with ``Z`` and milliseconds) gives the same answer in every zone: each zone's row runs the
history commands and the ``--at`` commands in a ``keel`` process of its own with ``TZ`` set
(the commands run in that process through ``tests/cli_inprocess.py``, one interpreter per zone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_inprocess import keel as run_keel
from cli_inprocess import python_in
from keel.core.entities import now_ms
from keel.core.times import format_at, parse_at

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HISTORY = [["kb", "log", "docs"], ["config", "history"], ["flags", "history", "f"]]

# Runs each argv of the JSON list on stdin through the keel entry point in this process.
RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from cli_inprocess import keel
out = [keel(*argv) for argv in json.load(sys.stdin)]
print(json.dumps([[r.returncode, r.stdout, r.stderr] for r in out]))
"""


def keel(*args: str, cwd: Path) -> str:
    out = run_keel(*args, cwd=cwd)
    assert out.returncode == 0, f"keel {' '.join(args)}: {out.stderr}"
    return out.stdout


def _after(ms: int) -> None:
    """Return once the clock is past ``ms``: the next change gets a later millisecond."""
    while now_ms() <= ms:
        pass


def _times(text: str) -> list[str]:
    return TIME.findall(text)


def _before(printed: str) -> str:
    return format_at(parse_at(printed) - 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two KB versions, two config snapshots, three flag changes, each a millisecond apart at least."""
    cwd = tmp_path_factory.mktemp("as-of")
    keel("init", cwd=cwd)
    (cwd / "config").mkdir()
    with python_in(cwd):
        from keel.sdk import config, flags, kb

        docs = kb.create("docs")
        for text in ("Refunds take 5 days.", "Refunds take 10 days. Shipping is free."):
            docs.add_documents([{"text": text, "source": "refunds.md"}])
            _after(docs.commit().created_at)
        for model in ("alpha", "beta"):
            (cwd / "config" / "production.yaml").write_text(f"llm:\n  model: {model}\n  api_key: !secret sk-1\n")
            _after(config.load("production").save().created_at)
        _after(flags.set("f", rollout=10).move.at)
        _after(flags.rollout("f", 50).move.at)
        flags.kill("f")
    return cwd


def _rows(history: list[str]) -> list[tuple[list[str], str, str]]:
    """``(argv, "ok" | "error", text the output must hold)``, times copied from the history output."""
    v2, v1 = _times(history[0])  # kb log: newest first
    beta, alpha = _times(history[1])  # config history: newest first
    m1, _m2, m3 = _times(history[2])  # flags history: oldest first
    return [
        (["kb", "show", "docs", "--at", v1], "ok", "docs@v1: committed " + v1),
        (["kb", "show", "docs", "--at", _before(v2)], "ok", "docs@v1: committed"),
        (["kb", "show", "docs", "--at", _before(v1)], "error", f"existed at {_before(v1)}"),
        (["kb", "search", "docs", "refunds", "--at", v2, "--json"], "ok", "Refunds take 10 days."),
        (["kb", "show", "docs", "--at", v1[:-1]], "error", "has no time zone"),
        (["config", "show", "--env", "production", "--at", _before(beta), "--json"], "ok", '"model": "alpha"'),
        (["config", "show", "--env", "production", "--at", beta], "ok", "model: beta"),
        (["config", "show", "--env", "production", "--at", _before(alpha)], "error", f"by {_before(alpha)}"),
        (["flags", "show", "f", "--at", m1, "--json"], "ok", '"rollout": 10.0'),
        (["flags", "show", "f", "--at", _before(m3)], "ok", f"f (boolean, production at {_before(m3)}): rollout 50%"),
        (["flags", "list", "--at", m3], "ok", "KILLED"),
        (["flags", "show", "f", "--at", _before(m1)], "error", f"no flag 'f' in 'production' at {_before(m1)}"),
    ]


@pytest.fixture(scope="module")
def printed_here(folder: Path) -> list[str]:
    """The history outputs as this process prints them."""
    return [keel(*argv, cwd=folder) for argv in HISTORY]


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo"])
def test_a_printed_time_gives_the_same_answer_in_every_zone(folder: Path, printed_here: list[str], zone: str) -> None:
    rows = _rows(printed_here)
    env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS", "COLUMNS")}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(Path(__file__).parents[1])],
        input=json.dumps(HISTORY + [argv for argv, _, _ in rows]),
        cwd=folder,
        env={**env, "TZ": zone},
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(done.stdout)
    # the history this zone prints is the text printed here: its times are the ones copied
    assert [r[1] for r in results[: len(HISTORY)]] == printed_here
    assert all(len(_times(text)) >= 2 for text in printed_here)
    for (argv, outcome, expected), (code, stdout, stderr) in zip(rows, results[len(HISTORY) :], strict=True):
        shown = " ".join(argv)
        if outcome == "ok":
            assert code == 0 and expected in stdout, (zone, shown, stdout, stderr)
        else:
            assert code != 0 and expected in stderr and len(stderr.strip().splitlines()) == 1, (zone, shown, stderr)
