"""``keel import ...``: bring MLflow, W&B and DVC history into keel (see docs/import.md)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["import_app"]

import_app = typer.Typer(
    help="Import runs, models, prompts and data from MLflow, W&B or DVC (idempotent, resumable).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A progress bar on a terminal's stderr; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


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
    with _progress("mlflow") as progress:
        summary = _api().mlflow(source, progress=progress)
    _report(summary, as_json)


@import_app.command("wandb")
def import_wandb(
    source: Annotated[Path, typer.Option("--from", help="The wandb/ folder (offline run folders inside).")],
    as_json: JsonOpt = False,
) -> None:
    """Runs written by wandb offline: config, history, summary, tables and files."""
    with _progress("wandb") as progress:
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
    with _progress("dvc") as progress:
        summary = _api().dvc(repo, rev or None, progress=progress)
    _report(summary, as_json)
    if not as_json and summary.imported.get("pointer file"):
        typer.echo("next: git add the new *.keel files and .gitignore changes, and commit them")
