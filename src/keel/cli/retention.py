"""``keel retention``: how long conversations, recorded LLM calls and traces are kept (docs/retention.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["retention_app"]

retention_app = typer.Typer(
    help="Retention periods for conversations, recorded LLM calls and traces: show, set, unset, apply.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
KindOpt = Annotated[str, typer.Option("--kind", "-k", help="conversations, llm_calls or traces.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Traces: the project (default: default). Conversations and calls: none."),
]


@retention_app.command("show")
def retention_show(as_json: JsonOpt = False) -> None:
    """The retention policies (what is not listed is kept forever)."""
    from keel.sdk import retention

    policies = retention.show()
    if as_json:
        from keel.cli.render import print_json

        print_json(policies)
        return
    if not policies:
        typer.echo("no retention policy: everything is kept")
        return
    for p in policies:
        typer.echo(f"{p['kind']:<14} {p['project']:<20} {p['max_age']:>6}  (set by {p['updated_by'] or '?'})")


@retention_app.command("set")
def retention_set(
    kind: KindOpt,
    max_age: Annotated[str, typer.Option("--max-age", help="Keep records this long: 30d, 12w, 24h.")],
    project: ProjectOpt = None,
) -> None:
    """Keep records of a kind at most this long (admin role on its scope)."""
    from keel.sdk import retention

    policy = retention.set(kind, max_age, project=project)
    assert policy is not None  # noqa: S101 - set with an age returns the policy
    typer.echo(f"{policy['kind']} in {policy['project']}: kept {policy['max_age']}")


@retention_app.command("unset")
def retention_unset(kind: KindOpt, project: ProjectOpt = None) -> None:
    """Remove a policy: records of that kind are kept forever again."""
    from keel.sdk import retention

    retention.unset(kind, project=project)
    typer.echo(f"{kind}: no retention policy (kept forever)")


@retention_app.command("apply")
def retention_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would expire; remove nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Expire now what the policies say (a server also does it on its schedule)."""
    from keel.sdk import retention

    reports = retention.apply(dry_run=dry_run)
    if as_json:
        from keel.cli.render import print_json

        print_json([r.to_dict() for r in reports])
        return
    print_reports(reports)


def print_reports(reports: list[Any]) -> None:
    """One line per report of a retention pass."""
    if not reports:
        typer.echo("no retention policy: nothing expired")
    for r in reports:
        if r.dry_run:
            typer.echo(f"{r.kind}: {r.matched:,} would expire (dry run)")
        else:
            freed = f", {r.objects_removed:,} objects, {r.bytes_freed:,} bytes freed" if r.objects_removed else ""
            typer.echo(f"{r.kind}: {r.deleted:,} expired{freed}")
