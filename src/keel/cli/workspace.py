"""``keel init``, ``keel info`` and ``keel verify``: the workspace and everything it stores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from keel.sdk.client import Client

__all__ = ["info_cmd", "init_cmd", "verify_cmd"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _client() -> Client:
    from keel.sdk.client import Client

    return Client(create=False)


def init_cmd(
    path: Annotated[Path, typer.Argument(help="Folder to make a workspace (default: here).")] = Path("."),
    store: Annotated[str | None, typer.Option("--store", help="Database URL (default: .keel/keel.db).")] = None,
    objects: Annotated[str | None, typer.Option("--objects", help="Object store URL or path.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rewrite an existing workspace config.")] = False,
) -> None:
    """Create a .keel/ workspace (config, SQLite database, object store)."""
    from keel.sdk.workspace import init_workspace

    root = init_workspace(path, store, objects, force)
    typer.echo(f"Initialized keel workspace in {root / '.keel'}")


def info_cmd(as_json: JsonOpt = False) -> None:
    """Show which store this folder uses."""
    from keel.cli.render import print_json

    described = _client().describe()
    if as_json:
        print_json(described)
    else:
        for key, value in described.items():
            typer.echo(f"{key:10} {value}")


def verify_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="SQLite's quick_check instead of integrity_check (skips index checks).")
    ] = False,
    seal: Annotated[
        bool,
        typer.Option(
            "--seal", help="Give finished records that have no digest yet (written before keel had them) one."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check everything keel stores: objects against their hashes, the database file, and
    the digest of every finished run, prompt and model version and reflog entry (exit 5 if
    anything is wrong)."""
    from keel.cli.render import print_json
    from keel.cli.verify_report import verify_lines, verify_progress

    report = _client().verify(quick=quick, seal=seal, progress=None if as_json else verify_progress())
    if as_json:
        print_json(report.to_dict())
    else:
        for line in verify_lines(report):
            typer.echo(line)
    if not report.ok:
        raise typer.Exit(5)
