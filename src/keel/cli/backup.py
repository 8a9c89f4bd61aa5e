"""``keel backup DEST`` and ``keel restore SRC [FOLDER]``: a local workspace's backup (see docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["backup_command", "restore_command"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy objects instead of hard-linking them (a backup on the same disk).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Back up this workspace (SQLite + local objects) while it is in use: a consistent
    database snapshot (SQLite's online backup API), its objects, config and a manifest."""
    from keel.cli.progress import progress_bar
    from keel.cli.render import print_json
    from keel.sdk.backup import backup

    with progress_bar("backup", enabled=not as_json) as progress:
        report = backup(dest, link=not copy, progress=progress)
    if as_json:
        print_json({"dest": str(report.dest), **report.manifest})
        return
    objects = report.manifest["objects"]
    tables = report.tables
    typer.echo(f"backed up to {report.dest}")
    typer.echo(f"database  {report.manifest['database']['bytes']:,} bytes, {sum(tables.values()):,} rows")
    for name in ("runs", "prompt_versions", "model_versions", "artifacts"):
        if name in tables:
            typer.echo(f"  {name:16} {tables[name]:,}")
    typer.echo(
        f"objects   {objects['count']:,} ({objects['bytes']:,} bytes; "
        f"{objects['linked']:,} linked, {objects['copied']:,} copied)"
    )
    typer.echo(f"restore with: keel restore {report.dest} FOLDER (or KEEL_URI=sqlite:///{report.dest}/keel.db)")


def restore_command(
    src: Annotated[Path, typer.Argument(help="A folder 'keel backup' wrote.")],
    into: Annotated[Path, typer.Argument(help="The folder to make a workspace in (no .keel/ store yet).")] = Path("."),
    link: Annotated[
        bool, typer.Option("--link", help="Hard-link objects from the backup instead of copying them.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Make a workspace from a backup, then check it as 'keel verify' does (exit 5 if anything is wrong)."""
    from keel.cli.progress import progress_bar
    from keel.cli.render import print_json
    from keel.sdk.backup import restore

    with progress_bar("restore", enabled=not as_json) as progress:
        report = restore(src, into, link=link, progress=progress)
    if as_json:
        print_json({"workspace": str(report.root), "objects": report.objects, "verify": report.verify.to_dict()})
    else:
        typer.echo(f"restored {src} ({report.manifest.get('created_at')}) into {report.root / '.keel'}")
        typer.echo(f"objects   {report.objects:,}")
        verify = report.verify
        typer.echo(
            f"verify    {verify.checked:,} objects checked: {len(verify.corrupt)} corrupt, "
            f"{len(verify.missing)} missing; {'ok' if verify.ok else 'PROBLEMS (run keel verify)'}"
        )
    if not report.verify.ok:
        raise typer.Exit(5)
