"""``keel reproduce --trace ID``: replay a recorded trace's LLM calls offline, call by call.

A trace made inside a run, by an app whose client is wrapped with
``keel.llm.wrap`` (record mode), has its LLM calls recorded with the run. This
replays them through keel's own replay path (a wrapped client in ``replay``
mode scoped to the run: no network) and checks that each call gets back the
recording it made, in order: the n-th identical request its n-th answer
(see "Repeated requests" in :mod:`keel.sdk.llm`).

Which calls are the trace's: each ``llm`` span a wrapped client added names
its recording (attributes :data:`REQUEST_HASH`, ``keel.llm.occurrence`` and
``keel.llm.sequence``: see :mod:`keel.sdk.llm_spans`); a span naming only a
request hash made the first recording of it after the span started; when the
spans name none (an app traced by hand or with OpenTelemetry), every call the
trace's run recorded while the trace ran is the trace's. Identical requests made before the trace in the same run are
replayed first, unreported, so that each call of the trace gets its own
occurrence number.

The report says ``identical`` or lists, per call, what differed: a missing
recording (:class:`~keel.errors.ReplayMiss`), another recording replayed, a
content that does not read back.
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass, field
from typing import Any

from keel.errors import InvalidInput, KeelError, NotFound

__all__ = ["REQUEST_HASH", "ReplayedCall", "TraceReplayReport", "reproduce_trace"]

#: The span attribute naming the request hash of the recording an ``llm`` span made.
REQUEST_HASH = "keel.llm.request_hash"
# What else a wrapped client's span says about its call (keel.sdk.llm_spans).
OCCURRENCE = "keel.llm.occurrence"
SEQUENCE = "keel.llm.sequence"
MODE = "keel.llm.mode"
SOURCE = "keel.llm.source"
_SLACK_MS = 1  # a call is recorded when it returns, before its trace ends (ms rounding)


@dataclass
class ReplayedCall:
    """One LLM call of the trace, replayed."""

    endpoint: str
    model: str
    request_hash: str
    occurrence: int | None
    span_id: str | None
    answer: str
    identical: bool
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "request_hash": self.request_hash,
            "occurrence": self.occurrence,
            "span_id": self.span_id,
            "answer": self.answer,
            "identical": self.identical,
            "problem": self.problem,
        }


@dataclass
class TraceReplayReport:
    """What :func:`reproduce_trace` found."""

    trace_id: str
    project: str
    run_id: str
    calls: list[ReplayedCall] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when every call of the trace replayed its own recording."""
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "trace_id": self.trace_id,
            "project": self.project,
            "run_id": self.run_id,
            "identical": self.identical,
            "calls": [c.to_dict() for c in self.calls],
            "differences": list(self.differences),
            "notes": list(self.notes),
        }


def _plain(value: Any) -> Any:
    """``value`` as JSON data without null fields (a rebuilt response has every field)."""
    from keel.core.llm import normalize

    def strip(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: strip(v) for k, v in data.items() if v is not None}
        if isinstance(data, list):
            return [strip(v) for v in data]
        return data

    return strip(normalize(value))


def _answer(data: Any, width: int = 60) -> str:
    """The text an LLM response carries, on one line (chat, responses, embeddings, other)."""
    text: str
    if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
        choice: dict[str, Any] = data["choices"][0] if isinstance(data["choices"][0], dict) else {}
        message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
        text = str(message.get("content") or choice.get("text") or json.dumps(message.get("tool_calls") or ""))
    elif isinstance(data, dict) and isinstance(data.get("output"), list):
        parts = [
            str(part.get("text", ""))
            for item in data["output"]
            if isinstance(item, dict)
            for part in item.get("content") or []
            if isinstance(part, dict)
        ]
        text = " ".join(p for p in parts if p)
    elif isinstance(data, dict) and isinstance(data.get("data"), list):
        text = f"<{len(data['data'])} embeddings>"
    elif isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _offline(*_args: Any, **_kwargs: Any) -> Any:  # pragma: no cover - replay mode never calls it
    raise AssertionError("a replay reached the network")


def reproduce_trace(trace_id: str, project: str | None = None) -> TraceReplayReport:
    """Replay the LLM calls of trace ``trace_id`` (id or unique prefix) offline; see the module docstring.

    Raises:
        NotFound: no such trace, or its run recorded no LLM call while it ran.
        InvalidInput: the trace was not made inside a run (its calls have no recordings to replay).
    """
    from keel.sdk import traces as trace_api
    from keel.sdk.session import get_session

    detail = trace_api.get(trace_id, project)
    trace = detail.trace
    short = trace.trace_id[:8]
    run_id = trace.run_id or next((s.run_id for s in detail.spans if s.run_id), None)
    if run_id is None:
        raise InvalidInput(
            f"trace {short} was not recorded inside a run: its LLM calls have no recordings to replay",
            "make the calls inside keel.start_run(...) through keel.llm.wrap(client) to record them",
        )
    session = get_session(create=False)
    for writer in session.writers():  # what this process recorded is in the store first
        writer.flush()
    llm = session.llm
    rows = llm.calls(run=run_id, limit=None)
    first, last = trace.start_ns // 1_000_000, trace.end_ns // 1_000_000 + _SLACK_MS
    spans = sorted((s for s in detail.spans if s.kind == "llm"), key=lambda s: (s.start_ns, s.span_id))
    named = [s for s in spans if isinstance(s.attributes.get(REQUEST_HASH), str)]
    report = TraceReplayReport(trace.trace_id, trace.project, run_id)
    if named:
        mine, span_of = _recorded_calls(named, rows, run_id, report)
    else:
        span_of = {}
        mine = [r for r in rows if first <= r.created_at <= last]
        report.notes.append(
            f"the trace's spans do not name their recordings ({REQUEST_HASH}): replayed the calls run "
            f"{run_id[:8]} recorded while the trace ran"
        )
    if not mine and not report.differences:
        raise NotFound(
            f"run {run_id[:8]} recorded no LLM call while trace {short} ran"
            + (" (its LLM spans were replayed or made live)" if named else ""),
            f"record them through keel.llm.wrap(client) in record mode; see 'keel llm calls --run {run_id[:8]}'",
        )
    if spans and len(spans) != len(mine):
        report.notes.append(f"the trace has {len(spans)} LLM spans and {len(mine)} recorded calls")
    # Each request's calls are numbered in the run (per sequence): replay them all, in that order.
    keys = {(r.context.get("sequence"), r.request_hash) for r in mine}
    order = sorted(
        (r for r in rows if (r.context.get("sequence"), r.request_hash) in keys),
        key=lambda r: (str(r.context.get("sequence") or ""), r.request_hash, r.replay_order),
    )
    ours = {r.id for r in mine}
    results = contextvars.Context().run(_replay, session, run_id, order, ours)  # no active run, span or sequence
    for row in mine:
        call = results[row.id]
        call.span_id = span_of.get(row.id)
        report.calls.append(call)
        if not call.identical:
            where = f"call {len(report.calls)} ({row.endpoint} {row.model or '-'}, request {row.request_hash[:12]}"
            report.differences.append(
                f"{where} #{row.occurrence if row.occurrence is not None else '?'}): {call.problem}"
            )
    return report


def _recorded_calls(
    named: list[Any], rows: list[Any], run_id: str, report: TraceReplayReport
) -> tuple[list[Any], dict[int, str]]:
    """The recordings the trace's ``llm`` spans made (oldest first) and the span of each.

    A span naming its request and occurrence (``keel.llm.occurrence``, per ``keel.llm.sequence``)
    made exactly that recording; one naming only its request, the first recording of it made
    after the span started. Spans answered from a recording (``keel.llm.mode = replay``) or
    called without recording (``live``) made none: they are noted, not replayed.
    """
    mine: list[Any] = []
    span_of: dict[int, str] = {}
    for span in named:
        digest = str(span.attributes[REQUEST_HASH])
        mode = span.attributes.get(MODE, "record")
        if mode != "record":
            how = (
                f"was answered from a recording of {str(span.attributes.get(SOURCE) or '-')[:12]}"
                if mode == "replay"
                else f"was made in {mode} mode, not recorded"
            )
            report.notes.append(f"LLM span {span.name!r} ({span.span_id}) {how}: not replayed")
            continue
        occurrence = span.attributes.get(OCCURRENCE)
        if isinstance(occurrence, int) and not isinstance(occurrence, bool):
            key = span.attributes.get(SEQUENCE)
            candidates = [
                r
                for r in rows
                if r.request_hash == digest and r.occurrence == occurrence and r.context.get("sequence") == key
            ]
        else:  # spans of old clients, or from elsewhere: the first of its request after it started
            start_ms = span.start_ns // 1_000_000
            candidates = [r for r in rows if r.request_hash == digest and r.created_at >= start_ms]
        found = next((r for r in candidates if r.id not in span_of), None)
        if found is None:
            report.differences.append(
                f"LLM span {span.name!r} ({span.span_id}) names request {digest[:12]}"
                + (f" #{occurrence}" if isinstance(occurrence, int) else "")
                + f", which run {run_id[:8]} did not record"
            )
            continue
        span_of[found.id] = span.span_id
        mine.append(found)
    return sorted(mine, key=lambda r: r.id), span_of


def _replay(session: Any, run_id: str, rows: list[Any], ours: set[int]) -> dict[int, ReplayedCall]:
    """Replay ``rows`` in order through one replay-mode recorder scoped to ``run_id``."""
    from keel.sdk.llm_recorder import Recorder, sequence

    recorder = Recorder("replay", None, None, None, None, None, run_id)
    recorder.trace = False  # a replay adds no spans (wrapped clients that trace add one per call)
    out: dict[int, ReplayedCall] = {}
    for row in rows:
        problem: str | None = None
        answer = ""
        try:
            stored = session.llm.read(row)
            recorded = _plain(stored.response)
            answer = _answer(recorded)
            token = sequence.set(row.context.get("sequence"))
            try:
                replayed = _plain(recorder.invoke(row.endpoint, _offline, stored.request, False, None, None))
            finally:
                sequence.reset(token)
            if replayed != recorded:
                problem = f"replayed {_answer(replayed)!r} instead of the recorded {answer!r}"
        except KeelError as exc:
            problem = exc.message
        if row.id in ours:
            out[row.id] = ReplayedCall(
                row.endpoint, row.model, row.request_hash, row.occurrence, None, answer, problem is None, problem
            )
    return out
