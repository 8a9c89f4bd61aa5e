"""``keel sync``: deliver what ended processes left in the spool; ``--status``: what waits where."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

__all__ = ["sync_command"]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def sync_command(
    status: Annotated[
        bool, typer.Option("--status", help="Only show what waits in the spool, deliver nothing.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Give up after this many seconds (the rest stays spooled).")
    ] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Deliver logged records that wait in the spool (left by processes that ended before the
    store or server took them) to the current store; exit 1 if some could not be delivered."""
    from keel.cli.render import print_json, table
    from keel.sdk.delivery import pending_spools, sync

    if status:
        waiting = pending_spools()
        if as_json:
            print_json([entry.to_dict() for entry in waiting])
            return
        if not waiting:
            typer.echo("nothing waits in the spool")
            return
        by_store: dict[str, list[list[str]]] = {}
        for entry in waiting:
            info = entry.to_dict()
            by_store.setdefault(entry.description or entry.destination, []).append(
                [
                    entry.stream,
                    f"{entry.records:,}",
                    f"{entry.rows:,}",
                    _age(info["oldest_age_s"]),
                    f"{entry.held_rows:,}" if entry.held else "-",
                ]
            )
        for store, rows in by_store.items():
            typer.echo(f"store: {store}")
            table(["stream", "batches", "records", "oldest", "held by a running process"], rows)
        typer.echo(f"spool: {waiting[0].folder.parent.parent}; deliver with: keel sync")
        return

    started = time.monotonic()
    shown: dict[str, tuple[int, int]] = {}

    def progress(stream: str, delivered: int, left: int) -> None:
        if not as_json and sys.stderr.isatty() and shown.get(stream) != (delivered, left):
            shown[stream] = (delivered, left)
            typer.echo(f"  {stream}: {delivered:,} delivered, {left:,} to go", err=True)

    report = sync(timeout=timeout, progress=progress)
    if as_json:
        print_json(report.to_dict())
    else:
        total = sum(report.delivered.values())
        if not total and not any(report.waiting.values()) and not any(report.rejected.values()):
            typer.echo(f"nothing waits in the spool for {report.store}")
        else:
            typer.echo(f"delivered {total:,} records to {report.store} in {time.monotonic() - started:.1f} s")
            for name, count in report.delivered.items():
                if not (count or report.waiting.get(name) or report.rejected.get(name)):
                    continue
                extra = []
                if report.rejected.get(name):
                    extra.append(f"{report.rejected[name]:,} refused")
                if report.waiting.get(name):
                    extra.append(f"{report.waiting[name]:,} still waiting")
                typer.echo(f"  {name:13} {count:,}" + (f" ({', '.join(extra)})" if extra else ""))
        for name, count in report.held.items():
            typer.echo(f"  {name:13} {count:,} held by a running keel process (it delivers them)")
        if not report.complete:
            typer.echo(
                f"keel: some records could not be delivered ({report.last_error or 'timed out'}); "
                "they stay in the spool: run 'keel sync' again later",
                err=True,
            )
    if not report.complete or any(report.rejected.values()):
        raise typer.Exit(1)
