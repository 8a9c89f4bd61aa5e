"""``keel data ...`` and ``keel remote ...``: data versioning from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["data_app", "remote_app"]

data_app = typer.Typer(
    help="Version data next to code: pointer files in git, bytes in keel's store and remotes.",
    no_args_is_help=True,
)
remote_app = typer.Typer(help="Remotes that data is pushed to and pulled from (folders or S3).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
PathsArg = Annotated[list[Path] | None, typer.Argument(help="Tracked paths (default: all).")]
RemoteOpt = Annotated[str | None, typer.Option("--remote", "-r", help="Remote name (default: the default remote).")]
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel transfers.")]
LinkOpt = Annotated[
    str | None, typer.Option("--link", help="auto | reflink | hardlink | copy (default: [data] link in the config).")
]


def _api() -> Any:
    from keel.sdk import data

    return data


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _progress(label: str, unit: str, as_json: bool) -> Any:
    """The progress bar of a command (on a terminal's stderr only; never with --json)."""
    from keel.cli.progress import progress_bar

    return progress_bar(label, unit, enabled=not as_json)


def _print_json(value: Any) -> None:
    from keel.cli.render import print_json

    print_json(value)


@data_app.command("add")
def data_add(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to track.")],
    link: LinkOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Track files or folders: store their bytes, write PATH.keel and a .gitignore entry."""
    with _progress("data add", "bytes", as_json) as progress:
        results = _api().add(paths, link=link, progress=progress)
    if as_json:
        _print_json([r.to_dict() for r in results])
        return
    for r in results:
        what = f"{r.files:,} files, " if r.kind == "dir" else ""
        state = "updated" if r.changed else "unchanged"
        typer.echo(f"{state:9} {r.pointer_path}  ({what}{_size(r.size)}; {r.oid[:12]})")
    pointers = " ".join(r.pointer_path for r in results if r.changed)
    if pointers:
        typer.echo(f"next: git add {pointers} .gitignore files beside them, and commit")


@data_app.command("status")
def data_status(paths: PathsArg = None, as_json: JsonOpt = False) -> None:
    """Tracked paths that are modified, missing, or hold new files (vs their pointer files)."""
    entries = _api().status(paths)
    if as_json:
        _print_json([e.to_dict() for e in entries])
        return
    if not entries:
        typer.echo("no tracked data (keel data add PATH)")
        return
    changed = 0
    for e in entries:
        for warning in e.warnings:
            typer.echo(f"warning: {warning}", err=True)
        if e.state == "ok":
            continue
        changed += 1
        note = {"missing": " (keel data checkout restores it)", "unknown": " (version not cached: keel data pull)"}
        if e.interrupted:
            note["modified"] = " (a checkout of it was interrupted: keel data checkout completes it)"
        typer.echo(f"{e.state}: {e.path}{note.get(e.state, '')}")
        made = set(e.changes.made_executable)
        modes = [f"{p}  ({'644 -> 755' if p in made else '755 -> 644'})" for p in e.changes.mode_changed]
        for label, items in (
            ("new", e.changes.added),
            ("modified", e.changes.modified),
            ("mode", modes),
            ("deleted", e.changes.removed),
        ):
            for item in items[:20]:
                typer.echo(f"    {label:9} {item}")
            if len(items) > 20:
                typer.echo(f"    ... and {len(items) - 20} more {label}")
    if not changed:
        typer.echo(f"data up to date ({len(entries)} tracked path{'s' if len(entries) != 1 else ''})")


@data_app.command("diff")
def data_diff(
    rev_a: Annotated[str | None, typer.Argument(help="Older git revision (default HEAD).")] = None,
    rev_b: Annotated[str | None, typer.Argument(help="Newer git revision (default: the working tree).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Files added, removed and modified between two revisions' pointer files."""
    changes = _api().diff(rev_a, rev_b)
    if as_json:
        _print_json([c.to_dict() for c in changes])
        return
    if not changes:
        typer.echo("no data changes")
        return
    for c in changes:
        typer.echo(f"{c.change}: {c.path}")
        if c.files is not None:
            made = set(c.files.made_executable)
            modes = [f"{p}  ({'644 -> 755' if p in made else '755 -> 644'})" for p in c.files.mode_changed]
            rows = (("added", c.files.added), ("removed", c.files.removed), ("modified", c.files.modified))
            for label, items in (*(rows if c.kind == "dir" else ()), ("mode", modes)):
                for item in items[:20]:
                    typer.echo(f"    {label:9} {item}")
                if len(items) > 20:
                    typer.echo(f"    ... and {len(items) - 20} more {label}")


@data_app.command("checkout")
def data_checkout(
    paths: PathsArg = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Discard changes that are not in the cache.")] = False,
    link: LinkOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make the workspace's data match the pointer files (e.g. after git checkout)."""
    with _progress("data checkout", "files", as_json) as progress:
        result = _api().checkout(paths, force=force, link=link, progress=progress)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(result.to_dict())
        return
    typer.echo(_checkout_line(result))


def _checkout_line(result: Any) -> str:
    modes = ", ".join(f"{n:,} {m}" for m, n in sorted(result.modes.items()))
    extra = f", {result.mode_changed:,} mode changed" if result.mode_changed else ""
    if result.folders_removed:
        extra += f", {result.folders_removed:,} empty folder{'s' if result.folders_removed != 1 else ''} removed"
    return (
        f"{result.written:,} files written{f' ({modes})' if modes else ''}, {result.removed:,} removed,"
        f" {result.unchanged:,} unchanged{extra}"
    )


@data_app.command("unprotect")
def data_unprotect(paths: Annotated[list[Path], typer.Argument(help="Tracked files or folders.")]) -> None:
    """Replace linked, read-only files with writable copies, to edit them in place."""
    changed = _api().unprotect(paths)
    typer.echo(f"{len(changed):,} file(s) made writable")


def _transfer_line(verb: str, r: Any) -> str:
    return f"{verb} {r.transferred:,} object(s), {_size(r.bytes)} ({r.present:,} already there) -- remote {r.remote}"


@data_app.command("push")
def data_push(paths: PathsArg = None, remote: RemoteOpt = None, jobs: JobsOpt = None, as_json: JsonOpt = False) -> None:
    """Upload tracked data the remote does not have yet."""
    with _progress("data push", "bytes", as_json) as progress:
        result = _api().push(paths, remote=remote, jobs=jobs, progress=progress)
    if as_json:
        _print_json(result.to_dict())
    else:
        typer.echo(_transfer_line("pushed", result))
    if result.not_in_cache:
        typer.echo(f"error: not in the cache, not pushed: {', '.join(result.not_in_cache)}", err=True)
        raise typer.Exit(3)


def _report_fetch(result: Any, as_json: bool) -> None:
    if not as_json:
        typer.echo(_transfer_line("fetched", result))
    if result.not_on_remote:
        typer.echo(f"error: remote {result.remote} lacks: {', '.join(result.not_on_remote)}", err=True)


@data_app.command("fetch")
def data_fetch(
    paths: PathsArg = None, remote: RemoteOpt = None, jobs: JobsOpt = None, as_json: JsonOpt = False
) -> None:
    """Download tracked data into the cache (the workspace is not changed)."""
    with _progress("data fetch", "bytes", as_json) as progress:
        result = _api().fetch(paths, remote=remote, jobs=jobs, progress=progress)
    if as_json:
        _print_json(result.to_dict())
    _report_fetch(result, as_json)
    if result.not_on_remote:
        raise typer.Exit(3)


@data_app.command("pull")
def data_pull(
    paths: PathsArg = None,
    remote: RemoteOpt = None,
    jobs: JobsOpt = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Discard changes that are not in the cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fetch, then check out: bring the data of the pointer files into the workspace."""
    with _progress("data pull", "bytes", as_json) as progress:
        fetched, result = _api().pull(paths, remote=remote, force=force, jobs=jobs, progress=progress)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json({"fetch": fetched.to_dict(), "checkout": result.to_dict()})
    else:
        _report_fetch(fetched, as_json)
        typer.echo(_checkout_line(result))
    if fetched.not_on_remote:
        raise typer.Exit(3)


@data_app.command("gc")
def data_gc(
    workspace: Annotated[
        bool, typer.Option("--workspace", "-w", help="Keep what the working tree's pointers use.")
    ] = False,
    all_commits: Annotated[
        bool, typer.Option("--all-commits", "-a", help="Keep what any commit's pointers use.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only show what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove cached data objects that no pointer file reaches (never what runs reference)."""
    from keel.errors import InvalidInput

    if workspace == all_commits:
        raise InvalidInput("choose what to keep", "pass --workspace or --all-commits")
    result = _api().gc(all_commits=all_commits, dry_run=dry_run)
    if as_json:
        _print_json(result.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for oid in result.removed if dry_run else []:
        typer.echo(f"  {oid}")
    typer.echo(f"{verb} {len(result.removed):,} object(s), {_size(result.bytes)}; kept {result.kept:,}")


@data_app.command("verify")
def data_verify(
    workspace: Annotated[bool, typer.Option("--workspace", "-w", help="Also re-hash the workspace files.")] = False,
    repair: Annotated[
        bool, typer.Option("--repair/--no-repair", help="Refetch corrupt objects from the remote.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash cached data (and the workspace); report corruption by path (exit 5 if any)."""
    checked, problems = _api().verify(workspace=workspace, repair=repair)
    if as_json:
        _print_json({"checked": checked, "problems": [p.to_dict() for p in problems]})
    else:
        for p in problems:
            fixed = " (refetched from the remote)" if p.repaired else ""
            typer.echo(f"{p.problem:9} {p.path}{'  ' + p.oid[:12] if p.oid else ''}{fixed}")
        typer.echo(f"{checked:,} objects checked, {len(problems)} problem(s)")
    if any(not p.repaired for p in problems):
        raise typer.Exit(5)


@data_app.command("log")
def data_log(
    path: Annotated[Path | None, typer.Argument(help="A tracked path (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Registered versions of tracked data, newest first, with the runs that used them."""
    from keel.core.entities import format_time

    versions = _api().log(path)
    if as_json:
        _print_json([v.to_dict() for v in versions])
        return
    from keel.cli.render import table

    table(
        ["path", "version", "files", "size", "commit", "added", "used by runs"],
        [
            [
                v.path,
                v.oid[:12],
                v.files,
                _size(v.size),
                v.git_commit[:8],
                format_time(v.created_at),
                ", ".join(r[:8] for r in v.runs),
            ]
            for v in versions
        ],
    )


# -- remotes -----------------------------------------------------------------------------------
@remote_app.command("add")
def remote_add(
    name: Annotated[str, typer.Argument(help="A short name, e.g. storage.")],
    url: Annotated[str, typer.Argument(help="A folder path or s3://bucket/prefix.")],
    default: Annotated[bool, typer.Option("--default", "-d", help="Make it the default remote.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a remote of that name.")] = False,
) -> None:
    """Add a remote (saved in .keel/config.toml, which belongs in git)."""
    _api().add_remote(name, url, default=default, force=force)
    typer.echo(f"remote {name} -> {url}{' (default)' if default else ''}")


@remote_app.command("list")
def remote_list(as_json: JsonOpt = False) -> None:
    """List remotes; * marks the default."""
    remotes, default = _api().remotes()
    if as_json:
        _print_json({"remotes": remotes, "default": default})
        return
    if not remotes:
        typer.echo("no remotes (keel remote add -d NAME URL)")
    for name, url in sorted(remotes.items()):
        typer.echo(f"{'*' if name == default else ' '} {name:16} {url}")


@remote_app.command("remove")
def remote_remove(name: Annotated[str, typer.Argument(help="Remote name.")]) -> None:
    """Forget a remote (its objects are left where they are)."""
    _api().remove_remote(name)
    typer.echo(f"removed remote {name}")
