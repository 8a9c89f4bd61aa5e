"""``keel gc``: remove the objects no live record references (docs/gc.md)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["gc_command"]

_SHOWN = 20  # removed objects listed by name (all of them with --json, up to 1,000)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def gc_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; remove nothing.")] = False,
    grace: Annotated[
        str,
        typer.Option("--grace", help="Keep objects younger than this (1h, 30m, 2d, or seconds): writers in flight."),
    ] = "1h",
    store: Annotated[
        str | None,
        typer.Option("--store", help="A database URL (a team server's), instead of this workspace's store."),
    ] = None,
    objects: Annotated[
        str | None, typer.Option("--objects", help="The object store URL that goes with --store.")
    ] = None,
    retention: Annotated[
        bool,
        typer.Option("--retention/--no-retention", help="Apply the retention policies first (keel retention show)."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Remove objects that no live record references, from the local store or S3, safely while
    other processes write (objects younger than --grace are kept); print what went and the space freed."""
    from keel.cli.render import print_json
    from keel.sdk.admin import gc

    report = gc(store, objects, grace=grace, dry_run=dry_run, retention=retention)
    if as_json:
        print_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for expired in report.expired:
        count = expired.matched if dry_run else expired.deleted
        typer.echo(f"retention: {'would expire' if dry_run else 'expired'} {count:,} {expired.kind.replace('_', ' ')}")
    typer.echo(
        f"{report.listed:,} objects: {report.referenced:,} referenced, "
        f"{report.kept_young:,} younger than the grace period, {verb} {report.removed:,} "
        f"({_size(report.bytes_freed)} {'to free' if dry_run else 'freed'})"
    )
    for oid in report.removed_oids[:_SHOWN]:
        typer.echo(f"  {verb} {oid}")
    if report.removed > _SHOWN:
        typer.echo(f"  ... and {report.removed - _SHOWN:,} more (--json lists up to 1,000)")
    if report.kept_fresh:
        typer.echo(f"{report.kept_fresh:,} kept: a writer stored or referenced them during the gc")
    if report.restored:
        typer.echo(f"{report.restored:,} objects an interrupted gc had set aside were put back")
    if report.tmp_files or report.aborted_uploads:
        typer.echo(
            f"leftovers: {report.tmp_files:,} temporary files ({_size(report.tmp_bytes)}), "
            f"{report.aborted_uploads:,} abandoned uploads aborted"
        )
