"""``keel conversations ...``: query logged conversations, record feedback, aggregate them, export eval data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["conversations_app"]

conversations_app = typer.Typer(
    help="Logged conversations: list, show, record feedback, stats per prompt version, export as an eval dataset, "
    "delete.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
FilterOpt = Annotated[
    str | None,
    typer.Option("--filter", "-f", help="e.g. \"feedback.thumb = 'down' and model = 'gpt-4'\""),
]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time: 2026-11-01, 2026-11-01T12:00, epoch ms, or 24h / 7d ago.")
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Before this time (same forms as --since).")]


def _api() -> Any:
    from keel.sdk import conversations

    return conversations


def _text(content: Any) -> str:
    """A message's content as one line of text (content parts joined)."""
    if content is None:
        return ""
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        content = " ".join(p for p in parts if p)
    return " ".join(str(content).split())


def _last(record: Any, role: str) -> str:
    for message in reversed(record.messages):
        if isinstance(message, dict) and message.get("role") == role:
            return _text(message.get("content"))
    return ""


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@conversations_app.command("list")
def conversations_list(
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many records.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Logged conversation records, newest first."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    records = _api().search(filter_, since, until, limit)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    table(
        ["conversation", "time", "model", "prompt_version", "feedback", "latency_ms", "tokens", "user", "assistant"],
        [
            [
                r.conversation_id,
                format_time(r.timestamp),
                r.model,
                r.prompt_version,
                r.thumb,
                None if r.latency_ms is None else round(r.latency_ms),
                r.total_tokens,
                _cut(_last(r, "user"), 40),
                _cut(_last(r, "assistant"), 40),
            ]
            for r in records
        ],
    )
    if len(records) == limit:
        typer.echo(f"(showing the newest {limit}: raise --limit for more)", err=True)


@conversations_app.command("show")
def conversations_show(
    conversation_id: Annotated[str, typer.Argument(help="Conversation id (or a unique prefix).")],
    as_json: JsonOpt = False,
) -> None:
    """One conversation: its messages, model, prompt version, feedback (with later events), tokens, metadata."""
    from keel.cli.render import console, print_json
    from keel.core.entities import format_time

    detail = _api().get(conversation_id)
    if as_json:
        print_json(detail.to_dict())
        return
    out = console()
    for record in detail.records:
        out.print(f"[bold]conversation[/bold] {record.conversation_id}   {format_time(record.timestamp)}")
        facts = [
            ("model", record.model),
            ("prompt", record.prompt_version),
            ("run", record.run_id),
            ("latency", None if record.latency_ms is None else f"{record.latency_ms:g} ms"),
            ("tokens", _tokens(record)),
            ("feedback", _feedback(record.user_feedback)),
            ("metadata", json.dumps(record.metadata, sort_keys=True) if record.metadata else None),
        ]
        for key, value in facts:
            if value:
                out.print(f"  {key:<9} {value}", markup=False, highlight=False)
        for message in record.messages:
            role = message.get("role", "?") if isinstance(message, dict) else "?"
            content = _text(message.get("content")) if isinstance(message, dict) else str(message)
            out.print(f"  [bold]{role:>9}[/bold]: ", end="")
            out.print(content, markup=False, highlight=False)
    if detail.feedback:
        out.print("[bold]feedback events[/bold]")
        for event in detail.feedback:
            out.print(f"  {format_time(event.at)}  {_feedback(event.to_dict())}", markup=False, highlight=False)


def _tokens(record: Any) -> str | None:
    """``812 prompt + 64 completion``, or ``876 in all`` for a total logged without a split."""
    if record.prompt_tokens is None and record.completion_tokens is None:
        return None if record.total_tokens is None else f"{record.total_tokens} in all"
    return f"{record.prompt_tokens or 0} prompt + {record.completion_tokens or 0} completion"


def _feedback(feedback: dict[str, Any]) -> str:
    parts = []
    if feedback.get("thumb"):
        parts.append(f"thumb {feedback['thumb']}")
    if feedback.get("score") is not None:
        parts.append(f"score {feedback['score']:g}")
    if feedback.get("comment"):
        parts.append(f"comment {feedback['comment']!r}")
    return ", ".join(parts)


@conversations_app.command("feedback")
def conversations_feedback(
    conversation_id: Annotated[str, typer.Argument(help="Conversation id (or a unique prefix).")],
    thumb: Annotated[str | None, typer.Option("--thumb", help="up or down.")] = None,
    score: Annotated[float | None, typer.Option("--score", help="A number, e.g. 4 on a 1-5 scale.")] = None,
    comment: Annotated[str | None, typer.Option("--comment", "-m", help="Free text (secrets are masked).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record feedback on a logged conversation (as keel.conversations.feedback does): it updates
    the conversation's latest record and is kept as an event ('keel conversations show')."""
    import math

    from keel.cli.render import print_json
    from keel.errors import InvalidInput, StoreError

    if thumb is None and score is None and comment is None:
        raise InvalidInput("no feedback given", "pass --thumb up|down, --score NUMBER or --comment TEXT")
    if thumb is not None and thumb.strip().lower() not in ("up", "down"):
        raise InvalidInput(f"--thumb must be up or down, not {thumb!r}", "pass --thumb up or --thumb down")
    if score is not None and not math.isfinite(score):
        raise InvalidInput(f"--score must be a finite number, not {score}", "e.g. --score 4")
    api = _api()
    # A typo in the id must not queue feedback for a conversation that never comes: resolve it first.
    full_id = api.get(conversation_id).conversation_id
    api.feedback(full_id, thumb=thumb, score=score, comment=comment, strict=True)
    api.flush()
    counts = api.counters()
    if counts["failed"]:
        raise StoreError("the feedback could not be written", "see the log above, then run the command again")
    if counts["pending"]:
        typer.echo("the store did not answer in time: the feedback waits in the spool ('keel sync' delivers it)")
        return
    # What is stored now (each of thumb, score and comment is the newest given; secrets masked).
    stored = api.get(full_id).latest.user_feedback
    if as_json:
        print_json({"conversation_id": full_id, "user_feedback": stored})
        return
    typer.echo(f"recorded: conversation {full_id} feedback is now {_feedback(stored)}")


@conversations_app.command("stats")
def conversations_stats(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            "-b",
            help="prompt_version (default), model, run_id, day, feedback.thumb or metadata.KEY; repeatable.",
        ),
    ] = None,
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    prices: Annotated[
        Path | None,
        typer.Option("--prices", help='A JSON file of USD per 1M tokens: {"model": {"prompt": 3, "completion": 15}}.'),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per group: count, thumbs-up rate, latency p50/p95, tokens and cost."""
    from keel.cli.render import print_json, table
    from keel.errors import InvalidInput, NotFound

    table_prices = None
    if prices is not None:
        if not prices.is_file():
            raise NotFound(f"no price file {str(prices)!r}", "check the path")
        try:
            table_prices = json.loads(prices.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InvalidInput(
                f"{prices} is not valid JSON: {exc}", '{"model": {"prompt": 3, "completion": 15}}'
            ) from None
    groups = by or ["prompt_version"]
    result = _api().stats(groups, filter_, since, until, table_prices)
    if as_json:
        print_json([s.to_dict() for s in result])
        return
    if not result:
        typer.echo("no conversations match")
        return
    columns = ["count", "up", "down", "up_rate", "p50_ms", "p95_ms", "prompt_tok", "compl_tok", "tokens", "cost_usd"]
    table(
        [*groups, *columns],
        [
            [
                *s.group.values(),
                s.count,
                s.thumbs_up,
                s.thumbs_down,
                None if s.thumbs_up_rate is None else f"{s.thumbs_up_rate:.1%}",
                None if s.latency_p50 is None else round(s.latency_p50, 1),
                None if s.latency_p95 is None else round(s.latency_p95, 1),
                s.prompt_tokens,
                s.completion_tokens,
                s.total_tokens,
                f"{s.cost:.4f}" + ("*" if s.unpriced_models or s.unsplit_tokens else ""),
            ]
            for s in result
        ],
    )
    unpriced = sorted({m for s in result for m in s.unpriced_models})
    if unpriced:
        typer.echo(f"* no price for: {', '.join(unpriced)} (pass --prices FILE)", err=True)
    unsplit = sum(s.unsplit_tokens for s in result)
    if unsplit:
        typer.echo(
            f"* {unsplit:,} tokens were logged as a total only, without a prompt/completion split: they are not "
            "in cost_usd (log tokens_used={'prompt': ..., 'completion': ...} to price them)",
            err=True,
        )


@conversations_app.command("export")
def conversations_export(
    to: Annotated[Path, typer.Option("--to", "-o", help="The JSON Lines file to write, e.g. dataset.jsonl.")],
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most this many lines.")] = None,
    all_records: Annotated[
        bool, typer.Option("--all-records", help="One line per logged record, not per conversation.")
    ] = False,
) -> None:
    """Write matching conversations as an eval dataset (JSONL); track it with 'keel data add'."""
    written = _api().export(to, filter_, since, until, limit, all_records)
    typer.echo(f"wrote {written} conversations to {to}")


@conversations_app.command("delete")
def conversations_delete(
    ids: Annotated[list[str] | None, typer.Argument(help="Conversation ids (every record of each goes).")] = None,
    filter_: FilterOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Allow erasing every conversation.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and list what would go; erase nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase conversations for good (by ids, or a filter and time range) with their feedback; an audit entry stays."""
    from keel.cli.erasing import confirm_and_erase

    api = _api()

    def erase(dry: bool) -> Any:
        return api.delete(ids or None, filter_, since, until, all=everything, dry_run=dry)

    confirm_and_erase([erase(True)], lambda: [erase(False)], dry_run=dry_run, yes=yes, as_json=as_json)
