"""``keel traces ...``: list and search traces, show one as a span tree, aggregate, export eval data."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["traces_app"]

traces_app = typer.Typer(
    help="Traces of your LLM app (trees of spans): list, show one, stats per model / prompt / day, export, delete.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="The project (default: KEEL_PROJECT, else 'default')."),
]
FilterOpt = Annotated[
    str | None,
    typer.Option(
        "--filter",
        "-f",
        help="e.g. \"status = 'error' and latency > 2000\", \"model = 'gpt-4o' and prompt = 'chat@1.3.0'\", "
        '"tokens.total > 1000", "tags.env = \'prod\'", "feedback.helpful < 0.5".',
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="From this time: 2026-11-01, 2026-11-01T12:00, epoch ms, or 24h / 7d ago."),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (same forms as --since).")]

BAR_WIDTH = 20  # cells of the timing bar in 'keel traces show'
# Groups of 'keel traces stats' that count spans (those with the field set), not traces.
_SPAN_GROUPS = {"model", "prompt", "prompt_version", "kind"}


def _api() -> Any:
    from keel.sdk import traces
    from keel.sdk.session import get_session

    get_session(create=False)  # a CLI command never creates a workspace by accident
    return traces


def _ms(value: float | None) -> str:
    """``350 ms``, ``1.24 s``, ``3m05s``; empty for None."""
    if value is None:
        return ""
    if value < 1000:
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def _tokens(input_tokens: int | None, output_tokens: int | None) -> int | None:
    if input_tokens is None and output_tokens is None:
        return None
    return (input_tokens or 0) + (output_tokens or 0)


def _cost(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _time(ns: int | None) -> str:
    from keel.core.entities import format_time

    return "" if ns is None else format_time(ns // 1_000_000)


def _clean(text: Any) -> str:
    """User text on one line, without control characters (a span's name or error is the app's)."""
    return "".join(c if c.isprintable() else " " for c in str(text))


def _table(
    columns: list[str],
    rows: list[list[Any]],
    keep: Collection[str] = (),
    optional: Sequence[str] = (),
    right: Collection[str] = (),
) -> None:
    """Print a table that fits the terminal (:func:`keel.cli.render.table`), columns named:
    ``optional`` columns with no value in any row are left out, the others are dropped to fit
    (last first) and stderr names those."""
    from keel.cli.render import table

    empty = {c for i, c in enumerate(columns) if c in optional and all(r[i] in (None, "") for r in rows)}
    shown = [i for i, c in enumerate(columns) if c not in empty]
    names = [columns[i] for i in shown]
    dropped = table(
        names,
        [[row[i] for i in shown] for row in rows],
        keep=[i for i, c in enumerate(names) if c in keep],
        optional=[names.index(c) for c in optional if c in names],
        right=[i for i, c in enumerate(names) if c in right],
    )
    if dropped:
        typer.echo(
            f"({len(dropped)} columns hidden to fit the terminal: {', '.join(dropped)}; "
            "widen it, set COLUMNS, or use --json)",
            err=True,
        )


@traces_app.command("list")
def traces_list(
    filter_: FilterOpt = None,
    order_by: Annotated[
        list[str] | None,
        typer.Option(
            "--order-by",
            "-o",
            help='e.g. "latency desc", "cost desc", "tokens", "time asc" (default: newest first); repeatable.',
        ),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many traces.")] = 50,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Traces of a project, newest first (or in --order-by order).

    The table shows id, name, status, start (UTC), latency, spans, tokens, cost, model and
    prompt version, and fits the terminal (COLUMNS overrides its width): the last columns
    are dropped first and stderr names them. 'keel traces show ID' shows one trace.
    """
    from keel.cli.render import print_json

    found = _api().search(filter_, order_by or None, since, until, limit, project)
    if as_json:
        print_json([t.to_dict() for t in found])
        return
    if not found:
        typer.echo("no traces match" + (" (check --filter, --since and --project)" if filter_ or since else ""))
        return
    columns = ["id", "name", "status", "start", "latency", "spans", "tokens", "cost", "model", "prompt"]
    rows = [
        [
            t.trace_id[:8],
            t.name,
            t.status,
            _time(t.start_ns),
            _ms(t.duration_ms),
            t.span_count,
            _tokens(t.input_tokens, t.output_tokens),
            _cost(t.cost),
            t.model,
            t.prompt,
        ]
        for t in found
    ]
    _table(
        columns,
        rows,
        keep={"id", "status", "start", "latency"},
        optional=["spans", "prompt", "model", "tokens", "cost"],
        right={"latency", "spans", "tokens", "cost"},
    )
    if len(found) == limit:
        typer.echo(f"(showing {limit}: raise --limit for more)", err=True)


def _bar(span: Any, start_ns: int, total_ns: int) -> str:
    """Where the span ran within the trace, as a bar of :data:`BAR_WIDTH` cells."""
    if total_ns <= 0:
        return "█"
    first = min(BAR_WIDTH - 1, int((span.start_ns - start_ns) / total_ns * BAR_WIDTH))
    cells = max(1, round((span.end_ns - span.start_ns) / total_ns * BAR_WIDTH))
    cells = min(cells, BAR_WIDTH - first)
    return " " * first + "█" * cells


def _score_text(score: Any) -> str:
    value = "" if score.value is None else f"{score.value:g}"
    if score.label:
        value = f"{value} ({score.label})" if value else score.label
    parts = [f"{score.key} {value}".rstrip()]
    if score.comment:
        parts.append(repr(score.comment))
    where = f"span {score.span_id}" if score.span_id else ""
    parts.append(f"[{score.source}{', ' + where if where else ''}]")
    return "  ".join(parts)


@traces_app.command("show")
def traces_show(
    trace_id: Annotated[str, typer.Argument(help="Trace id (or its first 8+ characters).")],
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One trace: its span tree (kind, status, duration, a timing bar, model, tokens, cost,
    prompt version), the run, conversation and versions it used, and its scores and feedback."""
    from keel.cli.render import print_json

    detail = _api().get(trace_id, project)
    if as_json:
        print_json(detail.to_dict())
        return
    trace = detail.trace
    head = [
        trace.trace_id,
        trace.name,
        trace.status,
        _time(trace.start_ns),
        _ms(trace.duration_ms),
        f"{trace.span_count} span{'s' if trace.span_count != 1 else ''}",
    ]
    tokens = _tokens(trace.input_tokens, trace.output_tokens)
    if tokens is not None:
        head.append(f"{tokens:,} tokens")
    if trace.cost is not None:
        head.append(f"${trace.cost:.4f}")
    typer.echo(_clean("trace " + "  ".join(head)))
    facts = [
        ("project", trace.project),
        ("run", trace.run_id),
        ("conversation", trace.conversation_id),
        ("user", trace.user_id),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(trace.tags.items())) if trace.tags else None),
        ("used", ", ".join(f"{k}:{i}@{v}" if v else f"{k}:{i}" for k, i, v in detail.links) or None),
    ]
    for key, value in facts:
        if value:
            typer.echo(f"  {key:<13}{_clean(value)}")
    typer.echo()
    start, total = trace.start_ns, trace.end_ns - trace.start_ns
    rows = []
    for depth, span in detail.tree():
        rows.append(
            [
                "  " * depth + span.name,
                span.kind,
                span.status,
                _ms(span.duration_ms),
                _bar(span, start, total),
                span.model,
                _tokens(span.input_tokens, span.output_tokens),
                _cost(span.cost),
                span.prompt,
            ]
        )
    columns = ["span", "kind", "status", "duration", "timeline", "model", "tokens", "cost", "prompt"]
    _table(
        columns,
        rows,
        keep={"kind", "status", "duration", "timeline"},
        optional=["prompt", "model", "tokens", "cost", "timeline"],
        right={"duration", "tokens", "cost"},
    )
    failed = [s for s in detail.spans if s.status == "error" and s.status_message]
    if failed:
        typer.echo("errors")
        for span in failed:
            typer.echo(_clean(f"  {span.name}: {span.status_message}"))
    if any(s.truncated for s in detail.spans):
        typer.echo("(some spans were cut to keel's limits: see --json, 'keel.truncated')")
    if detail.scores:
        typer.echo("scores")
        for score in detail.scores:
            typer.echo(_clean(f"  {_time(score.created_at * 1_000_000)}  {_score_text(score)}"))


@traces_app.command("stats")
def traces_stats(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            "-b",
            help="day (default), name, status, run_id, conversation_id, user_id (count traces), or model, "
            "prompt, kind (count the spans with that field); repeatable.",
        ),
    ] = None,
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per group: count, errors and error rate, latency p50/p95, tokens and cost (computed in SQL)."""
    from keel.cli.render import print_json

    groups = by or ["day"]
    result = _api().stats(groups, filter_, since, until, project)
    if as_json:
        print_json([s.to_dict() for s in result])
        return
    if not result:
        typer.echo("no traces match")
        return
    columns = ["count", "errors", "error_rate", "p50", "p95", "in_tokens", "out_tokens", "cost"]
    rows = [
        [
            *(s.group[g] for g in groups),
            s.count,
            s.errors,
            f"{s.error_rate:.1%}",
            _ms(s.latency_p50_ms),
            _ms(s.latency_p95_ms),
            s.input_tokens,
            s.output_tokens,
            f"{s.cost:.4f}",
        ]
        for s in result
    ]
    _table([*groups, *columns], rows, keep={*groups, "count", "errors", "error_rate", "p50", "p95"}, right=set(columns))
    spans = sorted(set(groups) & _SPAN_GROUPS)
    if spans:
        typer.echo(
            f"(grouped by {', '.join(spans)}: count, latency, tokens and cost are of spans, not traces)", err=True
        )


@traces_app.command("export")
def traces_export(
    to: Annotated[Path, typer.Option("--to", help="The JSON Lines file to write, e.g. dataset.jsonl.")],
    filter_: FilterOpt = None,
    span: Annotated[
        str | None,
        typer.Option(
            "--span", help="Take the inputs and outputs of the first span with this name (default: the root)."
        ),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many examples.")] = 100_000,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write matching traces as an evaluation dataset (one JSON line per trace: input, output,
    metadata); 'keel data add' versions it and keel.evaluate runs on it."""
    from keel.cli.render import print_json

    written = _api().export(to, filter_, span, since, until, limit, project)
    next_step = f"keel data add {to}"
    if as_json:
        print_json({"path": str(to), "examples": written, "span": span, "next": next_step})
        return
    source = f"span {span!r}" if span else "the root span"
    typer.echo(f"wrote {written} examples to {to} (inputs and outputs of {source})")
    if written:
        typer.echo(f"next: {next_step}   # version the dataset")
    else:
        typer.echo(
            "no trace matched"
            + (f" or had a span named {span!r}" if span else "")
            + ": see what matches with 'keel traces list"
            + (f" --filter {json.dumps(filter_)}" if filter_ else "")
            + "'"
        )


@traces_app.command("delete")
def traces_delete(
    ids: Annotated[list[str] | None, typer.Argument(help="Trace ids (or unique prefixes) of the project.")] = None,
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    project: ProjectOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Allow erasing every trace of the project.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and list what would go; erase nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase traces for good (by ids, or a filter and time range) with spans, scores, payloads; an audit entry stays."""
    from keel.cli.erasing import confirm_and_erase

    api = _api()

    def erase(dry: bool) -> Any:
        return api.delete(ids or None, filter_, since, until, project=project, all=everything, dry_run=dry)

    confirm_and_erase([erase(True)], lambda: [erase(False)], dry_run=dry_run, yes=yes, as_json=as_json)
