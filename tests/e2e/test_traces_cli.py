"""``keel traces list | show | stats | export`` as a user runs them.

The CLI runs in-process (``keel.cli.main.main``, the ``keel`` command's entry point)
against one real SQLite workspace holding three traces with known timings, stored
through ``keel.traces.ingest`` (as the OTLP endpoint stores them), feedback on one
trace and on its conversation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.cli.main import main

NOW = time.time_ns() - 3_600 * 10**9  # an hour ago: inside --since 2h
MS = 1_000_000
A, B, C = "a1" * 16, "b2" * 16, "c3" * 16
RUN = "e" * 32


def _span(trace: str, span: str, parent: str | None, name: str, start: int, end: int, **fields: object) -> dict:
    raw = {"trace_id": trace, "span_id": span * 8, "parent_id": parent and parent * 8, "name": name}
    raw.update({"start_ns": NOW + start * MS, "end_ns": NOW + end * MS, **fields})
    return raw


def _llm(model: str, tokens: tuple[int, int], cost: float, prompt: str) -> dict:
    return {
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": tokens[0],
        "gen_ai.usage.output_tokens": tokens[1],
        "keel.cost": cost,
        "keel.prompt": prompt,
    }


SPANS = [
    # A: the oldest, ok, 1.2 s: a retrieval then a model call, in run RUN and conversation c-1
    _span(A, "a0", None, "answer", 0, 1200, kind="chain", status="ok",
          attributes={"keel.run_id": RUN, "keel.conversation_id": "c-1", "keel.tag.env": "prod"},
          inputs={"question": "Where is my order?"}, outputs={"answer": "It ships tomorrow."}),
    _span(A, "a1", "a0", "retrieve", 10, 300, kind="retrieval", status="ok", outputs=["doc-1", "doc-2"]),
    _span(A, "a2", "a0", "generate", 300, 1190, kind="llm", status="ok",
          attributes=_llm("gpt-4o", (800, 60), 0.0056, "chat@1.3.0"),
          inputs={"messages": [{"role": "user", "content": "Where is my order?"}]}, outputs="It ships tomorrow."),
    # B: failed, 400 ms, a cheaper model and an older prompt
    _span(B, "b0", None, "answer", 60_000, 60_400, kind="chain", status="error", status_message="ValueError: no docs"),
    _span(B, "b1", "b0", "generate", 60_010, 60_390, kind="llm", status="error",
          attributes=_llm("gpt-4o-mini", (500, 10), 0.0001, "chat@1.2.0"), inputs={"q": "refund?"}),
    # C: the newest, 3 s, one model call as its root
    _span(C, "c0", None, "summarize", 120_000, 123_000, kind="llm", status="ok",
          attributes=_llm("gpt-4o", (2000, 300), 0.0125, "sum@1.0.0"), inputs={"text": "..."}, outputs="short"),
]  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import keel
    from keel.sdk import conversations
    from keel.sdk import session as sessions

    folder = tmp_path_factory.mktemp("traces-cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("KEEL_URI", raising=False)
        patch.delenv("KEEL_OBJECTS", raising=False)
        assert main(["init"]) == 0
        try:
            assert keel.traces.ingest(SPANS, project="shop").stored == len(SPANS)
            keel.traces.feedback(A, key="correct", value=True, comment="right", project="shop")
            keel.traces.flush()
            conversations.feedback("c-1", thumb="down", comment="too slow", strict=True)
            conversations.flush()
        finally:
            sessions.reset()
    yield folder


@pytest.fixture
def keel_cli(shop: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``keel ARGS`` in the workspace -> (exit code, stdout, stderr); ``columns`` sets COLUMNS."""
    monkeypatch.chdir(shop)

    def invoke(*args: str, columns: int | None = 200) -> tuple[int, str, str]:
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", str(columns))
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def _rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "┃" in line)
    headers = [h.strip() for h in lines[start].split("┃")]
    rows = []
    for line in lines[start + 2 :]:
        if "│" not in line:
            break
        rows.append([c.strip() for c in line.split("│")])
    return headers, rows


def test_list_table_filter_order_and_json(keel_cli) -> None:
    code, out, err = keel_cli("traces", "list", "--project", "shop")
    assert code == 0 and err == ""
    headers, rows = _rows(out)
    assert headers == ["id", "name", "status", "start", "latency", "spans", "tokens", "cost", "model", "prompt"]
    assert [r[0] for r in rows] == [C[:8], B[:8], A[:8]]  # newest first, short ids
    assert rows[2][1:] == ["answer", "ok", rows[2][3], "1.20 s", "3", "860", "0.0056", "gpt-4o", "chat@1.3.0"]
    assert rows[1][2] == "error" and rows[1][4] == "400 ms" and rows[0][4] == "3.00 s"

    code, out, _ = keel_cli("traces", "list", "-p", "shop", "--filter", "status = 'error'", "--json")
    assert code == 0 and [t["trace_id"] for t in json.loads(out)] == [B]
    code, out, _ = keel_cli("traces", "list", "-p", "shop", "--filter", "model = 'gpt-4o' and latency < 2000", "--json")
    assert [t["trace_id"] for t in json.loads(out)] == [A]
    code, out, _ = keel_cli("traces", "list", "-p", "shop", "--order-by", "latency desc", "--json")
    listed = json.loads(out)
    assert [t["trace_id"] for t in listed] == [C, A, B]
    assert listed[1]["conversation_id"] == "c-1" and listed[1]["run_id"] == RUN and listed[1]["tags"] == {"env": "prod"}
    code, out, err = keel_cli("traces", "list", "-p", "shop", "--since", "2h", "--until", "30m", "--limit", "2")
    assert [r[0] for r in _rows(out)[1]] == [C[:8], B[:8]] and "(showing 2: raise --limit for more)" in err
    code, out, _ = keel_cli("traces", "list", "-p", "shop", "--since", "1m")
    assert code == 0 and out.startswith("no traces match")


def test_list_fits_the_terminal(keel_cli) -> None:
    code, out, err = keel_cli("traces", "list", "-p", "shop", columns=80)
    headers, rows = _rows(out)
    assert code == 0 and all(len(line) <= 80 for line in out.splitlines())
    assert headers[:5] == ["id", "name", "status", "start", "latency"] and "cost" not in headers
    assert [r[0] for r in rows] == [C[:8], B[:8], A[:8]]
    assert err.startswith("(") and "columns hidden to fit the terminal: " in err and "cost" in err
    # piped, without COLUMNS: the whole table
    assert keel_cli("traces", "list", "-p", "shop", columns=None)[1] == keel_cli("traces", "list", "-p", "shop")[1]


def test_show_prints_the_span_tree(keel_cli) -> None:
    code, out, err = keel_cli("traces", "show", A[:8], "-p", "shop")  # a prefix
    assert code == 0 and err == ""
    first, *rest = out.splitlines()
    assert first.startswith(f"trace {A}  answer  ok  ") and first.endswith("1.20 s  3 spans  860 tokens  $0.0056")
    assert f"  run          {RUN}" in rest and "  conversation c-1" in rest and "  tags         env=prod" in rest
    assert "  used         prompt:chat@1.3.0" in rest
    headers, rows = _rows(out)
    assert headers == ["span", "kind", "status", "duration", "timeline", "model", "tokens", "cost", "prompt"]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("answer", "chain", "1.20 s"),
        ("retrieve", "retrieval", "290 ms"),
        ("generate", "llm", "890 ms"),
    ]
    lines = [line for line in out.splitlines() if "│" in line]
    assert lines[1].startswith("  retrieve") and lines[2].startswith("  generate")  # children indented
    bars = [line.split("│")[4] for line in lines]
    assert bars[0].strip() == "█" * 20  # the root spans the whole trace
    assert bars[2].index("█") > bars[1].index("█")  # generate starts after retrieve
    assert rows[2][5:] == ["gpt-4o", "860", "0.0056", "chat@1.3.0"]
    scores = out[out.index("scores") :].splitlines()[1:]
    assert scores[0].endswith("correct 1  'right'  [user]")
    assert scores[1].endswith("thumb 0 (down)  'too slow'  [conversation]")

    code, out, _ = keel_cli("traces", "show", B, "-p", "shop")
    assert "errors\n  answer: ValueError: no docs" in out

    code, out, _ = keel_cli("traces", "show", A, "-p", "shop", "--json")
    detail = json.loads(out)
    assert detail["trace"]["trace_id"] == A and len(detail["spans"]) == 3
    generate = next(s for s in detail["spans"] if s["name"] == "generate")
    assert generate["inputs"] == {"messages": [{"role": "user", "content": "Where is my order?"}]}
    assert generate["model"] == "gpt-4o" and generate["prompt"] == "chat@1.3.0" and generate["duration_ms"] == 890.0
    assert detail["links"] == [{"kind": "prompt", "id": "chat", "version": "1.3.0"}]
    assert [s["source"] for s in detail["scores"]] == ["user", "conversation"]


def test_stats_by_model_prompt_and_day(keel_cli) -> None:
    code, out, err = keel_cli("traces", "stats", "-p", "shop", "--by", "model", "--json")
    assert code == 0
    by_model = {s["group"]["model"]: s for s in json.loads(out)}
    assert by_model["gpt-4o"]["count"] == 2 and by_model["gpt-4o"]["errors"] == 0
    assert by_model["gpt-4o"]["input_tokens"] == 2800 and by_model["gpt-4o"]["cost"] == pytest.approx(0.0181)
    assert by_model["gpt-4o-mini"]["error_rate"] == 1.0
    assert by_model["gpt-4o"]["latency_p50_ms"] == pytest.approx((890 + 3000) / 2)

    code, out, err = keel_cli("traces", "stats", "-p", "shop", "--by", "prompt")
    headers, rows = _rows(out)
    assert headers == ["prompt", "count", "errors", "error_rate", "p50", "p95", "in_tokens", "out_tokens", "cost"]
    assert {r[0] for r in rows} == {"chat@1.3.0", "chat@1.2.0", "sum@1.0.0"}
    assert "are of spans, not traces" in err

    code, out, err = keel_cli("traces", "stats", "-p", "shop")  # by day: every trace
    headers, rows = _rows(out)
    assert headers[0] == "day" and len(rows) in (1, 2)  # an hour ago may be yesterday (UTC)
    assert sum(int(r[1]) for r in rows) == 3 and err == ""


def test_export_writes_an_eval_dataset(keel_cli, shop: Path, tmp_path: Path) -> None:
    target = tmp_path / "dataset.jsonl"
    code, out, _ = keel_cli("traces", "export", "-p", "shop", "--filter", "prompt = 'chat@1.3.0'", "--span",
                            "generate", "--to", str(target))  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        f"wrote 1 examples to {target} (inputs and outputs of span 'generate')",
        f"next: keel data add {target}   # version the dataset",
    ]
    (example,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert example["input"] == {"messages": [{"role": "user", "content": "Where is my order?"}]}
    assert example["output"] == "It ships tomorrow."
    assert example["metadata"]["trace_id"] == A and example["metadata"]["scores"] == {"correct": 1.0}

    code, out, _ = keel_cli("traces", "export", "-p", "shop", "--to", str(target), "--json")
    assert json.loads(out) == {"path": str(target), "examples": 3, "span": None, "next": f"keel data add {target}"}
    assert len(target.read_text().splitlines()) == 3

    code, out, _ = keel_cli("traces", "export", "-p", "shop", "--span", "nope", "--to", str(target))
    assert code == 0 and "wrote 0 examples" in out and "or had a span named 'nope'" in out

    # the next step it names works: the file becomes a versioned dataset
    local = shop / "dataset.jsonl"
    local.write_bytes(target.read_bytes())
    code, out, err = keel_cli("data", "add", "dataset.jsonl")
    assert code == 0, err
    assert (shop / "dataset.jsonl.keel").is_file()


def test_errors_are_one_line_with_exit_codes(keel_cli, tmp_path: Path, monkeypatch) -> None:
    code, out, err = keel_cli("traces", "show", "ffffffff", "-p", "shop")
    assert code == 3 and out == ""
    assert err == "error: no trace 'ffffffff' in project 'shop' (list traces with 'keel traces list')\n"
    code, _, err = keel_cli("traces", "show", "not-hex", "-p", "shop")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: invalid trace id")
    code, _, err = keel_cli("traces", "list", "-p", "shop", "--filter", "latency >")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    code, _, err = keel_cli("traces", "list", "-p", "shop", "--order-by", "colour")
    assert code == 2 and "cannot order traces by 'colour'" in err
    code, _, err = keel_cli("traces", "stats", "-p", "shop", "--by", "colour")
    assert code == 2 and "group by conversation_id, day" in err
    code, _, err = keel_cli("traces", "list", "-p", "nowhere")
    assert code == 3 and err.startswith("error: no project 'nowhere'")
    code, _, err = keel_cli("traces", "export", "-p", "shop", "--to", str(tmp_path / "no" / "x.jsonl"))
    assert code == 3 and "does not exist" in err
    monkeypatch.chdir(tmp_path)  # no workspace here: nothing is created
    code, _, err = keel_cli("traces", "list")
    assert code == 2 and "keel init" in err and not (tmp_path / ".keel").exists()
