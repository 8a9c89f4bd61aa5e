"""What the erasing commands share (``keel conversations delete``, ``keel traces delete``,
``keel llm delete``, ``keel erase --user``): a dry run first, the count, a confirmation unless ``--yes`` (refused
without a terminal to ask on), then the erasure; and how a report is printed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer

__all__ = ["confirm_and_erase", "print_derived", "print_report", "print_reports"]

#: How each kind is named in messages: (many, one).
NAMES = {
    "conversations": ("conversation records", "conversation record"),
    "traces": ("traces", "trace"),
    "llm_calls": ("recorded LLM calls", "recorded LLM call"),
    "runs": ("runs", "run"),
}
#: What the objects an erasure removes are, where it is not just "objects".
OBJECTS = {"llm_calls": "pack objects"}


def _pairs(items: Sequence[Any]) -> list[tuple[str, Any]]:
    """``(project, report)`` for reports given alone or with their project (``keel erase``)."""
    return [item if isinstance(item, tuple) else ("", item) for item in items]


def confirm_and_erase(
    plans: Sequence[Any],
    erase: Callable[[], Sequence[Any]],
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Given the dry-run ``plans`` (ErasureReports, or ``(project, report)``), print them and stop
    (``--dry-run``), say so when nothing matches, or ask (unless ``yes``), then ``erase()`` and
    print what it did."""
    from keel.errors import InvalidInput

    pairs = _pairs(plans)
    matched = sum(report.matched for _, report in pairs)
    if matched == 0 and not dry_run and len(pairs) == 1 and not as_json:
        project, report = pairs[0]
        typer.echo(f"no {_name(report, project, one=True)} matches: nothing erased")
        return
    if dry_run or matched == 0:
        print_reports(pairs, as_json)
        return
    if not yes:
        counts = ", ".join(
            f"{report.matched:,} {_name(report, project)}" for project, report in pairs if report.matched
        )
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"{counts} match; erasing them needs a confirmation, and there is no terminal to ask on",
                "add --yes to erase without asking (or --dry-run to see what matches)",
            )
        for _, report in pairs:
            print_derived(report)
        if not typer.confirm(f"Erase {counts} for good?", default=False):
            typer.echo("nothing erased")
            raise typer.Exit(1)
    print_reports(_pairs(erase()), as_json)


def _name(report: Any, project: str = "", *, one: bool = False) -> str:
    many, single = NAMES.get(report.kind, (report.kind, report.kind))
    return (single if one else many) + (f" in project {project}" if project else "")


def print_reports(pairs: Sequence[tuple[str, Any]], as_json: bool) -> None:
    if as_json:
        from keel.cli.render import print_json

        if len(pairs) == 1:
            print_json(pairs[0][1].to_dict())
        else:
            print_json([{**report.to_dict(), "project": project} for project, report in pairs])
        return
    for project, report in pairs:
        print_report(report, project)


def print_report(report: Any, project: str = "") -> None:
    """One line per report, then the versions made from the erased records."""
    name = _name(report, project)
    if report.dry_run:
        typer.echo(f"{report.matched:,} {name} match (dry run: nothing erased)")
    elif report.deleted == 0:
        typer.echo(f"no {_name(report, project, one=True)} matches: nothing erased")
    elif report.objects_removed:
        what = OBJECTS.get(report.kind, "objects")
        typer.echo(
            f"erased {report.deleted:,} {name} ({report.objects_removed:,} {what} removed, "
            f"{report.bytes_freed:,} bytes freed; audit entry {report.audit_id})"
        )
    else:
        typer.echo(f"erased {report.deleted:,} {name}; audit entry {report.audit_id}")
    print_derived(report)


def print_derived(report: Any) -> None:
    if report.derived:
        typer.echo("versions made from them (not changed: versions are immutable; decide what to do with them):")
        for item in report.derived:
            version = f"@{item['version'][:12]}" if item.get("version") else ""
            typer.echo(f"  {item['kind']} {item['id']}{version}: {item['why']}")
