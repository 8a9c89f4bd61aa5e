"""``keel runs list`` fits the terminal (issue 17): evaluation runs at 80 and 200 columns,
``--columns``, and piped output printed whole.

The CLI runs in-process (``keel.cli.main.main``, the ``keel`` command's entry point) with
``COLUMNS`` set, against one real workspace of evaluation-like runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.cli.main import main

MODELS = {"gpt-4o-mini": 0.82, "gpt-4o": 0.9, "llama-3-70b-instruct": 0.7}
TIME = r"[A-Z][a-z]{2} \d{2} \d{2}:\d{2}"  # a start time as runs list shows it: Dec 07 14:03


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace with three runs carrying what ``keel.evaluate`` logs (scores with
    ``_ci_low``/``_ci_high`` bounds, cost, latency, counts) and its params."""
    import keel
    from keel.sdk import session as sessions

    folder = tmp_path_factory.mktemp("eval-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("KEEL_URI", raising=False)
        patch.delenv("KEEL_OBJECTS", raising=False)
        assert main(["init"]) == 0
        client = keel.Client()
        try:
            for model, score in MODELS.items():
                run = client.start_run("rag-eval", f"qa_v1.2.0_{model}", {"keel.eval": "1"})
                run.log_params({"prompt": "qa@1.2.0", "model": model, "dataset": "data/qa.jsonl", "mode": "record"})
                run.log_metrics({
                    "exact_match": score, "exact_match_ci_low": score - 0.05, "exact_match_ci_high": score + 0.04,
                    "faithfulness": score - 0.1, "faithfulness_ci_low": score - 0.15,
                    "faithfulness_ci_high": score - 0.06, "cost_per_query": 0.000533, "cost_total": 0.0213,
                    "latency_p50_ms": 812.5, "latency_p95_ms": 2210.0, "samples": 40.0, "failed_samples": 0.0,
                    "scorer_errors": 0.0,
                })  # fmt: skip
                run.finish()
        finally:
            sessions.reset()
    yield folder


@pytest.fixture
def runs_list(eval_runs, monkeypatch, capsys):
    """``keel runs list ARGS`` with ``COLUMNS`` set (None: piped, no COLUMNS) -> (stdout, stderr)."""
    monkeypatch.chdir(eval_runs)

    def invoke(*args: str, columns: int | None = None, code: int = 0) -> tuple[str, str]:
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", str(columns))
        assert main(["runs", "list", *args]) == code
        out = capsys.readouterr()
        return out.out, out.err

    return invoke


def _table(stdout: str) -> tuple[list[str], list[str], list[list[str]]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    headers = [h.strip() for h in lines[0].split("┃")]
    rows = [[c.strip() for c in line.split("│")] for line in lines[2:]]
    return lines, headers, rows


def test_runs_list_fits_80_columns(runs_list):
    out, err = runs_list(columns=80)
    lines, headers, rows = _table(out)
    assert all(len(line) <= 80 for line in lines), out
    assert headers[:4] == ["id", "name", "status", "start"] and len(set(headers)) == len(headers)
    assert len(headers) >= 5 and headers[4].startswith("exact_m")  # the first score still fits
    assert [r[2] for r in rows] == ["finished"] * 3  # never "finis…"
    assert all(re.fullmatch(TIME, r[3]) for r in rows), rows  # never "2026-12-0…"
    # the columns that did not fit are named first, with how to show them, on one line
    assert re.match(r"\(\d+ columns hidden: cost_per_query, ", err) or "faithfulness" in headers[5:]
    assert "show them with --columns, e.g. --columns id,name," in err and err.count("\n") == 1


def test_runs_list_at_200_columns(runs_list):
    out, err = runs_list(columns=200)
    lines, headers, rows = _table(out)
    assert all(len(line) <= 200 for line in lines)
    assert headers == ["id", "name", "status", "start", "exact_match", "faithfulness", "cost_per_query",
                       "latency_p50_ms", "scorer_errors", "failed_samples"]  # fmt: skip
    assert "…" not in out
    assert {r[1]: r[4] for r in rows} == {f"qa_v1.2.0_{m}": str(s) for m, s in MODELS.items()}
    # not shown by default: the confidence bounds and the params, counted on stderr
    assert err.startswith("(11 columns hidden: latency_p95_ms, cost_total, samples, exact_match_ci_high, +7 more;")
    # piped without COLUMNS: the same table, printed whole however wide it is
    assert runs_list()[0] == out


def test_runs_list_columns(runs_list):
    picked = "id,name,exact_match_ci_low,exact_match_ci_high,params.model,duration"
    out, err = runs_list("--columns", picked, columns=120)
    _lines, headers, rows = _table(out)
    assert headers == ["id", "name", "exact_match_ci_low", "exact_match_ci_high", "model", "duration"]
    row = next(r for r in rows if r[1] == "qa_v1.2.0_llama-3-70b-instruct")
    assert row[2:5] == ["0.65", "0.74", "llama-3-70b-instruct"] and row[5].endswith("s")
    assert err == ""


def test_runs_list_columns_too_narrow_keep_headers_distinct(runs_list):
    bounds = "exact_match_ci_low,exact_match_ci_high,faithfulness_ci_low,faithfulness_ci_high"
    out, err = runs_list("--columns", f"id,status,{bounds}", columns=64)
    lines, headers, _rows = _table(out)
    assert all(len(line) <= 64 for line in lines) and len(set(headers)) == len(headers) == 6
    assert any("…" in h for h in headers) and err == ""
    # narrower still: whole columns go, and stderr says which
    out, err = runs_list("--columns", f"id,status,{bounds}", columns=40)
    lines, headers, _rows = _table(out)
    assert all(len(line) <= 40 for line in lines) and headers[:2] == ["id", "status"]
    assert re.match(r"\(\d columns did not fit in 40 columns: .*faithfulness_ci_high; ", err)


def test_runs_list_columns_typo_and_json(runs_list):
    _out, err = runs_list("--columns", "id,exact_mach", code=2)
    assert err.startswith("error: no column 'exact_mach'") and "--columns ...,exact_match" in err
    assert err.count("\n") == 1
    out, _err = runs_list("--columns", "id", "--json", columns=80)  # --json stays complete
    doc = json.loads(out)
    assert len(doc["runs"]) == 3 and all(len(r["metrics"]) == 13 and len(r["params"]) == 4 for r in doc["runs"])
