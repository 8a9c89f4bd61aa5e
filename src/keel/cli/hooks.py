"""``keel hooks ...``: webhook subscriptions and their deliveries (docs/hooks.md)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

__all__ = ["hooks_app"]

hooks_app = typer.Typer(help="Webhooks: subscribe URLs to events, test them, see deliveries.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
SubArg = Annotated[int, typer.Argument(help="Subscription id (see 'keel hooks list').")]


def _hooks() -> Any:
    from keel.sdk import hooks

    return hooks


def _when(ms: int | None) -> str:
    if not ms:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms // 1000))


@hooks_app.command("list")
def hooks_list(as_json: JsonOpt = False) -> None:
    """Every webhook subscription you may read (secrets are never shown again)."""
    from keel.cli.render import print_json, table

    subs = _hooks().list_subscriptions()
    if as_json:
        print_json([s.to_dict() for s in subs])
        return
    if not subs:
        typer.echo("no webhooks: add one with 'keel hooks add URL --event alias.moved'")
        return
    table(
        ["id", "scope", "events", "registry", "url", "state", "created"],
        [
            [
                s.id,
                s.scope,
                ", ".join(s.events),
                "/".join(x for x in (s.kind or "", s.name or "") if x),
                s.url,
                "active" if s.active else "paused",
                _when(s.created_at),
            ]
            for s in subs
        ],
        keep=(0, 4),
    )


@hooks_app.command("add")
def hooks_add(
    url: Annotated[str, typer.Argument(help="Target URL (http or https) that receives signed POSTs.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="Event kind or pattern (repeat; default every kind): alias.moved, review.*"),
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="A project, @registries (prompts, models, KBs, flags), or * for all.")
    ] = "*",
    kind: Annotated[str | None, typer.Option("--kind", help="Only events about this registry kind.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only events about this entity name.")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a URL to events; prints the signing secret once."""
    from keel.cli.render import print_json

    sub = _hooks().add(url, event, scope=scope, kind=kind, name=name, description=description)
    if as_json:
        print_json(sub.to_dict())
        return
    typer.echo(f"webhook {sub.id}: {', '.join(sub.events)} in {sub.scope} -> {sub.url}")
    typer.echo(f"secret: {sub.secret}")
    typer.echo("keep the secret now: it is not shown again (receivers verify X-Keel-Signature with it)")


@hooks_app.command("remove")
def hooks_remove(subscription: SubArg) -> None:
    """Delete a subscription with its deliveries."""
    sub = _hooks().remove(subscription)
    typer.echo(f"removed webhook {sub.id} ({sub.url})")


@hooks_app.command("test")
def hooks_test(subscription: SubArg, as_json: JsonOpt = False) -> None:
    """Send a signed hook.test event now and show what the receiver answered (exit 1 if it failed)."""
    from keel.cli.render import print_json

    delivery = _hooks().test(subscription)
    if as_json:
        print_json(delivery.to_dict())
    elif delivery.status == "delivered":
        typer.echo(f"delivered: HTTP {delivery.status_code} in {delivery.duration_ms:.1f} ms (delivery {delivery.id})")
    else:
        typer.echo(
            f"not delivered: {delivery.error} (delivery {delivery.id}, retried later; "
            f"see 'keel hooks deliveries {subscription}')"
        )
    if delivery.status != "delivered":
        raise typer.Exit(1)


@hooks_app.command("deliveries")
def hooks_deliveries(
    subscription: Annotated[int | None, typer.Argument(help="Subscription id (default: every one).")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many, newest first.")] = 50,
    attempts: Annotated[
        int | None, typer.Option("--attempts", help="Show every attempt of this delivery id instead.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent deliveries with their status code, error and duration (or one delivery's attempts)."""
    from keel.cli.render import print_json, table

    if attempts is not None:
        rows = _hooks().attempts(attempts)
        if as_json:
            print_json([a.to_dict() for a in rows])
            return
        table(
            ["attempt", "at", "status", "error", "ms", "worker"],
            [[a.attempt, _when(a.at), a.status_code, a.error or "", f"{a.duration_ms:.1f}", a.worker] for a in rows],
            right=(0, 4),
        )
        return
    found = _hooks().deliveries(subscription, status, limit)
    if as_json:
        print_json([d.to_dict() for d in found])
        return
    if not found:
        typer.echo("no deliveries yet")
        return
    table(
        ["id", "hook", "event", "status", "attempts", "code", "ms", "error", "created", "next"],
        [
            [
                d.id,
                d.subscription_id,
                d.event,
                d.status,
                d.attempts,
                d.status_code,
                "" if d.duration_ms is None else f"{d.duration_ms:.1f}",
                d.error or "",
                _when(d.created_at),
                _when(d.next_at) if d.status == "pending" else "",
            ]
            for d in found
        ],
        right=(0, 1, 4, 5, 6),
    )


@hooks_app.command("deliver")
def hooks_deliver(as_json: JsonOpt = False) -> None:
    """Work the delivery queue once, here (a workspace without a server; a server does it itself)."""
    from keel.cli.render import print_json

    done = _hooks().deliver()
    if as_json:
        print_json(
            {
                "events": done.events,
                "queued": done.queued,
                "delivered": done.delivered,
                "retrying": done.retrying,
                "failed": done.failed,
            }
        )
        return
    typer.echo(
        f"{done.events} events -> {done.queued} deliveries queued; sent: {done.delivered} delivered, "
        f"{done.retrying} to retry later, {done.failed} failed"
    )
