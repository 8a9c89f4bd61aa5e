"""``keel import ...``: bring MLflow, W&B and DVC history into keel (see docs/import.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["import_app"]

import_app = typer.Typer(
    help="Import runs, models, prompts and data from MLflow, W&B or DVC (idempotent, resumable).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _progress(label: str, unit: str, as_json: bool) -> Any:
    """The progress bar of an import (on a terminal's stderr only; never with --json)."""
    from keel.cli.progress import progress_bar

    return progress_bar(label, unit, enabled=not as_json)


def _report(summary: Any, as_json: bool) -> None:
    from keel.cli.render import print_json, table

    if as_json:
        print_json(summary.to_dict())
        return
    rows = summary.rows()
    if rows:
        table(["kind", "imported", "already there"], [[kind, new, old] for kind, new, old in rows])
    typer.echo(f"imported {summary.total_imported()} item(s) from {summary.source} ({summary.location})")


def _api() -> Any:
    from keel.sdk import importers

    return importers


@import_app.command("mlflow")
def import_mlflow(
    source: Annotated[
        str, typer.Option("--from", help="An mlruns folder, sqlite:///path/mlflow.db or http(s)://host:port.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Experiments, runs (params, metric histories, tags, artifacts, nesting), registered
    models with stages and aliases, and prompts."""
    with _progress("import mlflow", "items", as_json) as progress:
        summary = _api().mlflow(source, progress=progress)
    _report(summary, as_json)


@import_app.command("wandb")
def import_wandb(
    source: Annotated[Path, typer.Option("--from", help="The wandb/ folder (offline run folders inside).")],
    as_json: JsonOpt = False,
) -> None:
    """Runs written by wandb offline: config, history, summary, tables and files."""
    with _progress("import wandb", "runs", as_json) as progress:
        summary = _api().wandb(source, progress=progress)
    _report(summary, as_json)


@import_app.command("dvc")
def import_dvc(
    repo: Annotated[Path | None, typer.Option("--repo", help="The DVC repository (default: here).")] = None,
    rev: Annotated[
        list[str] | None,
        typer.Option("--rev", help="Only these revisions' DVC files (and the working tree's); repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """DVC-tracked data and its git history into keel data: objects, dataset versions and
    PATH.keel pointer files (commit them; older commits check out through their .dvc files)."""
    with _progress("import dvc", "versions", as_json) as progress:
        summary = _api().dvc(repo, rev or None, progress=progress)
    _report(summary, as_json)
    if not as_json and summary.imported.get("pointer file"):
        typer.echo("next: git add the new *.keel files and .gitignore changes, and commit them")
