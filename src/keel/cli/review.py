"""``keel review ...``: protected refs and change requests from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from keel.errors import InvalidInput

__all__ = ["review_app"]

review_app = typer.Typer(
    help="Protected aliases and change requests: protect, request, list, show, approve, reject, break-glass.",
    no_args_is_help=True,
)

KindArg = Annotated[str, typer.Argument(help="prompt, model, kb, flag or abtest.")]
NameArg = Annotated[str, typer.Argument(help="The registry entry (* with protect: every entry).")]
RefArg = Annotated[str, typer.Argument(help="The alias, stage:Production, the flag environment, or start.")]
IdArg = Annotated[int, typer.Argument(help="The change request's id (see 'keel review list').")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
WhoOpt = Annotated[
    str | None,
    typer.Option(
        "--who", help="Who acts, for the audit trail (default: you; a keel server records the signed-in user)."
    ),
]
CommentOpt = Annotated[str, typer.Option("--comment", "-m", help="The reviewer's comment.")]


def _reviews() -> Any:
    from keel.sdk import reviews

    return reviews


def _show_request(row: Any) -> None:
    typer.echo(f"change request {row.id}: {row.status}")
    typer.echo(f"  {row.kind} {row.name} {row.ref}: {row.from_target or '(unset)'} -> {row.to_target}")
    typer.echo(f"  asked by {row.requester}: {row.reason}")
    typer.echo(f"  approvals {row.approvals}/{row.required}, self-approval {'on' if row.self_approval else 'off'}")
    runs = row.evidence.get("runs") or []
    if runs:
        typer.echo(f"  evidence runs: {', '.join(runs)}")
    if row.evidence.get("comparison"):
        typer.echo(f"  comparison: {json.dumps(row.evidence['comparison'], sort_keys=True)}")
    for review in row.reviews:
        comment = f": {review.comment}" if review.comment else ""
        typer.echo(f"  {review.verdict}d by {review.reviewer}{comment}")


@review_app.command("protect")
def review_protect(
    kind: KindArg,
    name: NameArg,
    ref: RefArg,
    approvals: Annotated[int, typer.Option("--approvals", help="Approvals a move needs.")] = 1,
    self_approval: Annotated[
        bool, typer.Option("--self-approval/--no-self-approval", help="May the requester approve their own?")
    ] = False,
    who: WhoOpt = None,
) -> None:
    """Protect a ref: moving it then needs an approved change request (or an admin's break glass)."""
    rule = _reviews().protect(kind, name, ref, approvals, self_approval, who)
    typer.echo(
        f"protected {rule.ref} of {rule.kind} {rule.name}: {rule.approvals} approval(s), "
        f"self-approval {'on' if rule.self_approval else 'off'}"
    )


@review_app.command("unprotect")
def review_unprotect(
    kind: KindArg,
    name: NameArg,
    ref: RefArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = "",
    who: WhoOpt = None,
) -> None:
    """Remove a protection rule (recorded)."""
    _reviews().unprotect(kind, name, ref, reason, who)
    typer.echo(f"{ref} of {kind} {name} is no longer protected")


@review_app.command("rules")
def review_rules(as_json: JsonOpt = False) -> None:
    """Every protection rule."""
    from keel.cli.render import print_json, table

    rules = _reviews().rules()
    if as_json:
        print_json([r.to_dict() for r in rules])
        return
    table(
        ["kind", "name", "ref", "approvals", "self-approval", "by"],
        [[r.kind, r.name, r.ref, r.approvals, "on" if r.self_approval else "off", r.created_by] for r in rules],
    )


@review_app.command("request")
def review_request(
    kind: KindArg,
    name: NameArg,
    ref: RefArg,
    target: Annotated[str, typer.Argument(help="The version to move to (a flag: its definition as JSON).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required).")] = "",
    run: Annotated[list[str] | None, typer.Option("--run", help="A run that supports it (repeatable).")] = None,
    comparison: Annotated[
        str | None, typer.Option("--comparison", help="A JSON file of an evaluation comparison to attach.")
    ] = None,
    who: WhoOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask to move a protected ref, with a reason and evidence."""
    from keel.cli.render import print_json

    attached = None
    if comparison is not None:
        try:
            with open(comparison, encoding="utf-8") as f:
                attached = json.load(f)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read the comparison {comparison}: {exc}", "--comparison FILE.json") from None
    row = _reviews().request(kind, name, ref, target, reason, run, attached, who)
    if as_json:
        print_json(row.to_dict())
        return
    typer.echo(
        f"opened change request {row.id}: {row.ref} of {row.kind} {row.name} "
        f"{row.from_target or '(unset)'} -> {row.to_target}, needs {row.required} approval(s)"
    )


@review_app.command("list")
def review_list(
    status: Annotated[str | None, typer.Option("--status", help="open, applied, rejected, stale, forced.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this registry.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Change requests, newest first."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    rows = _reviews().list_requests(status, kind, None, limit)
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    table(
        ["id", "status", "kind", "name", "ref", "from", "to", "asked by", "when", "reason"],
        [
            [
                r.id,
                r.status,
                r.kind,
                r.name,
                r.ref,
                r.from_target or "",
                r.to_target,
                r.requester,
                format_time(r.created_at),
                r.reason,
            ]
            for r in rows
        ],
    )


@review_app.command("show")
def review_show(request_id: IdArg, as_json: JsonOpt = False) -> None:
    """A change request: what moves, why, the evidence, the reviews and what changes."""
    from keel.cli.render import print_json

    reviews = _reviews()
    row = reviews.get(request_id)
    changes = reviews.changes(request_id)
    if as_json:
        print_json({**row.to_dict(), "changes": changes})
        return
    _show_request(row)
    diff = changes.get("diff") or {}
    if diff.get("template_diff"):
        typer.echo(diff["template_diff"].rstrip("\n"))


@review_app.command("approve")
def review_approve(request_id: IdArg, comment: CommentOpt = "", who: WhoOpt = None) -> None:
    """Approve a change request; the approval that reaches the count applies the move."""
    row = _reviews().approve(request_id, comment, who)
    if row.status == "applied":
        typer.echo(
            f"approved and applied change request {row.id}: {row.ref} of {row.kind} {row.name} -> {row.to_target}"
        )
    else:
        typer.echo(f"approved change request {row.id} ({row.approvals}/{row.required} approvals)")


@review_app.command("reject")
def review_reject(request_id: IdArg, comment: CommentOpt = "", who: WhoOpt = None) -> None:
    """Reject a change request (nothing moves)."""
    row = _reviews().reject(request_id, comment, who)
    typer.echo(f"rejected change request {row.id}")


@review_app.command("break-glass")
def review_break_glass(
    kind: KindArg,
    name: NameArg,
    ref: RefArg,
    target: Annotated[str, typer.Argument(help="The version to move to now.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (required, recorded).")] = "",
    who: WhoOpt = None,
) -> None:
    """Move a protected ref now without approvals (admin; the reason is recorded)."""
    row = _reviews().break_glass(kind, name, ref, target, reason, who)
    typer.echo(f"moved {row.ref} of {row.kind} {row.name} to {row.to_target} (break glass, request {row.id})")
