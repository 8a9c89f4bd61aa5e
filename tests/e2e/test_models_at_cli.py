"""``keel models ... --at`` as a user runs it (issue 28): a time copied from ``keel models history``
gives the same answer in every time zone; ``show --at`` shows the stage and aliases of then and
marks deleted versions; ``alias set --at`` and ``alias rollback --steps`` move like git."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from cli_inprocess import keel as run_keel

ZONES = ["UTC", "America/New_York", "Asia/Tokyo"]

#: One process per zone: the CLI's entry point once per argument list, each answer on one line.
_SCRIPT = """
import contextlib, io, json, sys
from keel.cli.main import main
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    print(json.dumps([code, out.getvalue(), err.getvalue()]))
"""


def keel(*args: str, cwd, code: int = 0):
    out = run_keel(*args, cwd=cwd)
    assert out.returncode == code, f"keel {' '.join(args)}: {out.returncode} {out.stderr}"
    return out


def _history_times(cwd) -> dict[tuple[str, str, str], str]:
    """``(what, from, to) -> when`` as ``keel models history`` prints it (the table, not --json)."""
    rows = {}
    for line in keel("models", "history", "m", cwd=cwd).stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        if len(cells) >= 5 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cells[0]):
            rows[(cells[2], cells[3], cells[4])] = cells[0]
    return rows


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """champion: 1 -> 2 -> 3, each with version 1..3 promoted to Production; version 1 then deleted."""
    cwd = tmp_path_factory.mktemp("models-at")
    keel("init", cwd=cwd)
    for i in range(3):
        keel("models", "register", "m", "--source", f"hf://org/m-{i}", cwd=cwd)
    for v in ("1", "2", "3"):
        keel("models", "stage", "m", v, "Production", "--archive-existing", cwd=cwd)
        keel("models", "alias", "set", "m", "champion", v, cwd=cwd)
    times = _history_times(cwd)
    keel("models", "delete", "m", "--version", "1", "--yes", cwd=cwd)
    return cwd, times


def test_a_time_copied_from_history_means_the_same_in_every_zone(moved):
    cwd, times = moved
    to_one, to_two = times[("alias champion", "(unset)", "1")], times[("alias champion", "1", "2")]
    zoneless = to_two.removesuffix("Z")
    queries = [
        ["models", "show", "m", "--alias", "champion", "--at", to_one, "--json"],
        ["models", "show", "m", "--alias", "champion", "--at", to_two, "--json"],
        ["models", "show", "m", "--alias", "champion", "--at", zoneless, "--json"],
    ]
    for zone in ZONES:
        env = {k: v for k, v in os.environ.items() if k not in ("KEEL_URI", "KEEL_OBJECTS")}
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT, json.dumps(queries)],
            cwd=cwd,
            env={**env, "TZ": zone},
            capture_output=True,
            text=True,
            check=True,
        )
        answers = [json.loads(line) for line in done.stdout.splitlines()]
        one, two, refused = answers
        assert one[0] == 0 and json.loads(one[1])["version"] == 1, (zone, one)
        assert json.loads(one[1])["deleted"] is True, zone  # deleted since, still the answer then
        assert two[0] == 0 and json.loads(two[1])["version"] == 2, (zone, two)
        assert refused[0] != 0 and "has no time zone" in refused[2], (zone, refused)
        assert len(refused[2].strip().splitlines()) == 1, refused[2]


def test_show_at_shows_the_stage_and_aliases_of_then_and_marks_deleted(moved):
    cwd, times = moved
    at = times[("alias champion", "1", "2")]
    then = json.loads(keel("models", "show", "m", "--version", "2", "--at", at, "--json", cwd=cwd).stdout)
    now = json.loads(keel("models", "show", "m", "--version", "2", "--json", cwd=cwd).stdout)
    assert (then["stage"], then["aliases"], then["as_of"]) == ("Production", ["champion"], at)
    assert (now["stage"], now["aliases"]) == ("Archived", [])
    text = keel("models", "show", "m", "--stage", "Production", "--at", times[("alias champion", "(unset)", "1")],
                cwd=cwd).stdout  # fmt: skip
    assert "m@1  stage Production" in text and "DELETED at 20" in text
    listed = json.loads(keel("models", "show", "m", "--at", at, "--json", cwd=cwd).stdout)
    assert [(v["version"], v["stage"], v["deleted"]) for v in listed["versions"]] == [
        (3, "None", False),
        (2, "Production", False),
        (1, "Archived", True),
    ]
    history = keel("models", "history", "m", cwd=cwd).stdout
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\s*[│┃|]\s*\d+\s*[│┃|]", history), history


# (command after champion 1 -> 2 -> 3 and version 1's deletion, printed line or refusal)
MOVES = [
    (["alias", "rollback", "m", "champion"], "m@champion: 3 -> 2"),
    (["alias", "rollback", "m", "Champion"], "m@champion: 2 -> 3"),  # a rollback is a move
    (["alias", "rollback", "m", "champion", "--steps", "2"], "m@champion: 3 -> 3"),
    (["alias", "rollback", "m", "champion", "--steps", "99"], "error: alias 'champion' of model 'm' has"),
    (["alias", "set", "m", "champion", "--at", "@two"], "m@champion: 3 -> 2"),
    (["alias", "set", "m", "champion", "--at", "@one"], "error: alias 'champion' of model 'm' would point at"),
    (["alias", "set", "m", "champion"], "error: give a version to point at, or --at TIME"),
    (["alias", "set", "m", "Production", "2"], "error: alias 'Production' is the name of the stage"),
    (["alias", "m", "champion", "3"], "m@champion: 2 -> 3"),  # the form before the subcommands
    (["alias", "rm", "m", "CHAMPION"], "m@champion: 3 -> (removed)"),
]


def test_alias_set_at_and_rollback_steps(moved):
    cwd, times = moved
    stand_in = {"@one": times[("alias champion", "(unset)", "1")], "@two": times[("alias champion", "1", "2")]}
    for args, expected in MOVES:
        args = [stand_in.get(a, a) for a in args]
        out = run_keel("models", *args, cwd=cwd)
        if expected.startswith("error: "):
            assert out.returncode != 0 and out.stderr.startswith(expected), (args, out.stderr)
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        else:
            assert out.returncode == 0 and out.stdout.strip() == expected, (args, out.stdout, out.stderr)


def test_keel_verify_lists_a_pinned_source_that_drifted(tmp_path):
    keel("init", cwd=tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"v1")
    keel("models", "register", "pinned", "--source", "weights.bin", cwd=tmp_path)
    shown = json.loads(keel("models", "show", "pinned", "--version", "1", "--json", cwd=tmp_path).stdout)
    assert shown["source_digest"].startswith("sha256:")
    assert "0 drifted" in keel("verify", cwd=tmp_path).stdout
    (tmp_path / "weights.bin").write_bytes(b"v2")
    out = keel("verify", cwd=tmp_path).stdout  # drift is reported; the store itself is sound (exit 0)
    assert f"drift    model pinned@1  source weights.bin: registered {shown['source_digest']}, now sha256:" in out
    (tmp_path / "weights.bin").unlink()
    assert "now missing" in keel("verify", cwd=tmp_path).stdout
