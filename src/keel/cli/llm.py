"""``keel llm ...``: recorded LLM calls and the stand-in model server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["llm_app"]

llm_app = typer.Typer(
    help="Recorded LLM calls (list, show, export, import cassettes, delete) and the stand-in model server.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _api() -> Any:
    from keel.sdk import llm

    return llm


@llm_app.command("standin")
def llm_standin(
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port on 127.0.0.1 (0: any free port).")] = 8765,
    latency: Annotated[
        str | None, typer.Option("--latency", help="Seconds per request: 0.2, or gpt-4=0.8,gpt-3.5-turbo=0.3.")
    ] = None,
) -> None:
    """Run the stand-in OpenAI-compatible model server in the foreground (Ctrl-C stops it). Not a real LLM."""
    from keel.sdk.llm import StandInServer

    spec: Any = None
    if latency is not None:
        spec = _latency(latency)
    server = StandInServer(port=port, latency=spec)
    typer.echo(
        f"keel stand-in model server (deterministic, NOT a real LLM) on http://127.0.0.1:{port}/v1\n"
        f"use it with: openai.OpenAI(base_url='http://127.0.0.1:{port}/v1', api_key='standin')   (Ctrl-C stops it)"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")


def _latency(text: str) -> Any:
    from keel.errors import InvalidInput

    try:
        if "=" not in text:
            return float(text)
        return {name.strip(): float(value) for name, _, value in (p.partition("=") for p in text.split(",")) if name}
    except ValueError:
        raise InvalidInput(f"invalid --latency {text!r}", "write seconds (0.2) or model=seconds pairs") from None


@llm_app.command("calls")
def llm_calls(
    run: Annotated[str | None, typer.Option("--run", "-r", help="Calls recorded in this run (id or prefix).")] = None,
    cassette: Annotated[str | None, typer.Option("--cassette", "-c", help="Calls of an imported cassette.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many calls.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """List recorded LLM calls: of a run, of an imported cassette, or the newest in the store."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    rows = _api().calls(run=run, cassette=cassette, limit=limit)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        where = f" in run {run}" if run else (f" in cassette {cassette}" if cassette else "")
        typer.echo(f"no recorded LLM calls{where}")
        return
    table(
        ["request hash", "endpoint", "model", "latency ms", "tokens in", "tokens out", "cost $", "source", "recorded"],
        [
            [
                r.request_hash[:12],
                r.endpoint,
                r.model,
                None if r.latency_ms is None else round(r.latency_ms, 1),
                r.input_tokens,
                r.output_tokens,
                None if r.cost is None else f"{r.cost:.6f}",
                (r.run_id or "")[:8] or r.cassette,
                format_time(r.created_at),
            ]
            for r in rows
        ],
    )
    costs = [r.cost for r in rows if r.cost is not None]
    if costs:
        typer.echo(f"{len(rows)} calls, ${sum(costs):.6f} in all")


@llm_app.command("show")
def llm_show(
    request_hash: Annotated[str, typer.Argument(help="A request hash (or a unique prefix, 4+ digits).")],
    as_json: JsonOpt = False,
) -> None:
    """Show one recorded call: its context, request and response."""
    from keel.cli.render import console, print_json
    from keel.core.entities import format_time

    stored = _api().get_call(request_hash)
    if as_json:
        print_json(stored.to_dict())
        return
    row = stored.row
    out = console()
    out.print(f"[bold]{row.request_hash}[/bold]  {row.endpoint}  model {row.model}", highlight=False)
    out.print(
        f"recorded {format_time(row.created_at)} in {'run ' + row.run_id if row.run_id else 'cassette ' + row.cassette}"
        f"   latency {row.latency_ms} ms   tokens {row.input_tokens} in / {row.output_tokens} out"
        f"   cost {'-' if row.cost is None else f'${row.cost:.6f}'}   fingerprint {row.system_fingerprint or '-'}"
        f"{'   (streamed)' if row.streamed else ''}",
        highlight=False,
    )
    if row.context:
        out.print("context  " + json.dumps(row.context, sort_keys=True), highlight=False, markup=False)
    out.print("[bold]request[/bold]")
    out.print(json.dumps(stored.request, indent=2, ensure_ascii=False), highlight=False, markup=False)
    out.print("[bold]response[/bold]")
    out.print(json.dumps(stored.response, indent=2, ensure_ascii=False), highlight=False, markup=False)


@llm_app.command("export")
def llm_export(
    to: Annotated[Path, typer.Option("--to", "-o", help="The cassette file to write (JSONL).")],
    run: Annotated[str | None, typer.Option("--run", "-r", help="Export this run's recorded calls.")] = None,
    cassette: Annotated[str | None, typer.Option("--cassette", "-c", help="Export an imported cassette.")] = None,
) -> None:
    """Write recorded calls (a run's, a cassette's, or all) to a cassette file to share."""
    count = _api().export_cassette(to, run=run, cassette=cassette)
    typer.echo(f"exported {count} calls to {to}")


@llm_app.command("import")
def llm_import(
    path: Annotated[Path, typer.Argument(help="A cassette file written by 'keel llm export'.")],
    name: Annotated[str | None, typer.Option("--name", help="The cassette's name (default: the file name).")] = None,
) -> None:
    """Load a cassette file into this store: replay (mode replay or auto) then finds its calls."""
    cassette = _api().import_cassette(path, name=name)
    if cassette.created:
        typer.echo(f"imported {cassette.calls} calls as cassette {cassette.name}@{cassette.version}")
    else:
        typer.echo(f"cassette {cassette.name}@{cassette.version} is imported already ({cassette.calls} calls)")


@llm_app.command("delete")
def llm_delete(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Ids of recorded calls ('keel llm calls --json', field id).")
    ] = None,
    run: Annotated[str | None, typer.Option("--run", "-r", help="Calls recorded in this run (id or prefix).")] = None,
    where: Annotated[
        str | None,
        typer.Option("--filter", "-f", help="A filter, e.g. \"metadata.user_id = 'u-42'\" or \"model = 'gpt-4'\"."),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Recorded at or after: ISO time, epoch or 30d.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Recorded before: ISO time, epoch or 30d.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Allow erasing every recorded call.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and list what would go; erase nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase recorded calls for good (by ids, run, filter, time): rows, requests and responses; an audit entry stays."""
    from keel.cli.erasing import confirm_and_erase

    api = _api()

    def erase(dry: bool) -> Any:
        return api.delete_calls(ids or None, where, since, until, run, all=everything, dry_run=dry)

    confirm_and_erase([erase(True)], lambda: [erase(False)], dry_run=dry_run, yes=yes, as_json=as_json)
