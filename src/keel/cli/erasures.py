"""``keel erase --user ID`` (everything about one end user) and ``keel erasures list`` (the audit)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["erase_command", "erasures_app"]

erasures_app = typer.Typer(
    help="The erasure audit: who erased which records, when, with which filter, how many.",
    no_args_is_help=True,
)


def _api() -> Any:
    from keel.sdk import erasures
    from keel.sdk.session import get_session

    get_session(create=False)  # a CLI command never creates a workspace by accident
    return erasures


@erasures_app.command("list")
def erasures_list(
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many entries.")] = 50,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this kind: conversations, llm_calls, traces or runs.")
    ] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project's entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """List erasures, newest first: when, who, what kind, where, the filter (or how many ids), the counts, why."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    found = _api().entries(limit, kind, project)
    if as_json:
        print_json([e.to_dict() for e in found])
        return
    if not found:
        typer.echo("no erasures recorded")
        return
    table(
        ["id", "time", "who", "kind", "project", "filter / ids", "matched", "deleted", "objects", "why"],
        [
            [
                e.id,
                format_time(e.at),
                e.actor,
                e.kind,
                e.scope,
                e.filter or (f"{e.ids} id{'' if e.ids == 1 else 's'}" if e.ids else ""),
                e.matched,
                e.deleted,
                e.objects_removed,
                e.reason,
            ]
            for e in found
        ],
        right=(6, 7, 8),
        optional=(8, 2, 4),
    )


def erase_command(
    user: Annotated[
        str, typer.Option("--user", "-u", help="The end user's id, as your app logs it (metadata.user_id).")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and list what would go; erase nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Erase everything keel holds about one end user: conversations, traces (every project), recorded LLM calls."""
    from keel.cli.erasing import confirm_and_erase

    api = _api()
    plans = api.erase_user(user, dry_run=True)
    confirm_and_erase(plans, lambda: api.erase_user(user), dry_run=dry_run, yes=yes, as_json=as_json)
