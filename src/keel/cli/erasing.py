"""What the erasing commands share (``keel conversations delete``, ``keel traces delete``,
``keel erase --user``): a dry run first, the count, a confirmation unless ``--yes`` (refused
without a terminal to ask on), then the erasure; and how a report is printed."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer

__all__ = ["confirm_and_erase", "print_derived", "print_report", "print_reports"]

#: How each kind is named in messages.
NAMES = {
    "conversations": "conversation records",
    "traces": "traces",
    "llm_calls": "recorded LLM calls",
    "runs": "runs",
}


def confirm_and_erase(
    plans: Sequence[Any],
    erase: Callable[[], Sequence[Any]],
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Given the dry-run ``plans`` (ErasureReports), print them and stop (``--dry-run``), say
    so when nothing matches, or ask (unless ``yes``) and then ``erase()`` and print what it did."""
    from keel.errors import InvalidInput

    matched = sum(p.matched for p in plans)
    if dry_run or matched == 0:
        print_reports(plans, as_json)
        return
    if not yes:
        counts = ", ".join(f"{p.matched:,} {NAMES.get(p.kind, p.kind)}" for p in plans if p.matched)
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"{counts} match; erasing them needs a confirmation, and there is no terminal to ask on",
                "add --yes to erase without asking (or --dry-run to see what matches)",
            )
        for plan in plans:
            print_derived(plan)
        if not typer.confirm(f"Erase {counts} for good?", default=False):
            typer.echo("nothing erased")
            raise typer.Exit(1)
    print_reports(erase(), as_json)


def print_reports(reports: Sequence[Any], as_json: bool) -> None:
    if as_json:
        from keel.cli.render import print_json

        print_json([r.to_dict() for r in reports] if len(reports) != 1 else reports[0].to_dict())
        return
    for report in reports:
        print_report(report)


def print_report(report: Any) -> None:
    """One line per report, then the versions made from the erased records."""
    name = NAMES.get(report.kind, report.kind)
    if report.dry_run:
        typer.echo(f"{report.matched:,} {name} match (dry run: nothing erased)")
    elif report.deleted == 0:
        typer.echo(f"no {name} match: nothing erased")
    else:
        objects = (
            f", {report.objects_removed:,} objects removed ({report.bytes_freed:,} bytes)"
            if report.objects_removed
            else ""
        )
        typer.echo(f"erased {report.deleted:,} {name}{objects}; audit entry {report.audit_id}")
    print_derived(report)


def print_derived(report: Any) -> None:
    if report.derived:
        typer.echo("versions made from them (not changed: versions are immutable; decide what to do with them):")
        for item in report.derived:
            version = f"@{item['version'][:12]}" if item.get("version") else ""
            typer.echo(f"  {item['kind']} {item['id']}{version}: {item['why']}")
