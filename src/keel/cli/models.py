"""``keel models ...``: the model registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click  # the click that typer vendors (as keel.cli.main uses it)
from typer.core import TyperGroup

from keel.core.times import format_at, parse_at
from keel.errors import InvalidInput

__all__ = ["models_app"]

models_app = typer.Typer(
    help="Registered models: versions, stages, aliases, model cards, history.", no_args_is_help=True
)


class _AliasGroup(TyperGroup):
    """``keel models alias set|rollback|rm ...``; ``keel models alias NAME ALIAS VERSION``
    (and ``... --delete``), the form from before the subcommands, still works: anything
    that is not a subcommand's name runs the hidden ``point`` command."""

    def resolve_command(self, ctx: _click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["point", *args]
        return super().resolve_command(ctx, args)


alias_app = typer.Typer(
    cls=_AliasGroup,
    help="Aliases (champion, ...): set, roll back (undo the last moves), remove.",
    no_args_is_help=True,
)
models_app.add_typer(alias_app, name="alias")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
NameArg = Annotated[str, typer.Argument(help="Registered model name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")]


def _api() -> Any:
    from keel.sdk import models

    return models


def _registry() -> Any:
    """The model registry of this store (local or a server), whose moves take ``expected``."""
    from keel.sdk.session import get_session

    return get_session().models


AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="TIME",
        help="As of a time with its zone: 2026-12-07T10:00:00Z (as 'keel models history' prints it), "
        "2026-12-07T11:00:00+01:00, or epoch 1733500000s / 1733500000000ms.",
    ),
]
ExpectOpt = Annotated[
    str | None,
    typer.Option(
        "--expect",
        metavar="VERSION",
        help="Move only if the alias points at VERSION now ('unset': only if it does not exist); "
        "otherwise refuse (exit 4) and say where it points.",
    ),
]


def _when(text: str | None) -> int | None:
    """``--at`` as epoch ms (:func:`keel.core.times.parse_at`: a zoneless time is refused)."""
    return None if text is None else parse_at(text)


def _expected(expect: str | None) -> str | None:
    return None if expect is None else ("" if expect.strip().lower() in ("", "unset") else expect.strip())


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Every registered model with its latest version, stages and aliases."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    models = _api().list_models()
    if as_json:
        print_json([m.to_dict() for m in models])
        return
    table(
        ["model", "latest", "stages", "aliases", "updated", "description"],
        [
            [
                m.name,
                m.latest_version,
                ", ".join(f"{stage}: {','.join(map(str, vs))}" for stage, vs in sorted(m.stages.items())),
                ", ".join(f"{a}: {v}" for a, v in sorted(m.aliases.items())),
                format_time(m.updated_at),
                m.description.splitlines()[0] if m.description else "",
            ]
            for m in models
        ],
    )


@models_app.command("show")
def models_show(
    name: NameArg,
    version: Annotated[int | None, typer.Option("--version", "-v", help="One version.")] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="The highest version in a stage.")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="The version an alias points at.")] = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A model's versions; or, with --version/--stage/--alias, one version with its card and lineage.
    With --at, as they were then: stages and aliases of that time, deleted versions marked."""
    from keel.cli.render import print_json, table
    from keel.core.entities import format_time

    api = _api()
    when = _when(at)
    if version is None and stage is None and alias is None:
        if when is not None:
            _show_versions_at(name, when, as_json)
            return
        model = api.get_model(name)
        versions = api.versions(name)
        if as_json:
            print_json({**model.to_dict(), "versions": [v.to_dict() for v in versions]})
            return
        if model.description:
            typer.echo(model.description)
        table(
            ["version", "stage", "aliases", "source", "run", "registered", "author"],
            [
                [
                    v.version,
                    v.stage,
                    ", ".join(v.aliases),
                    v.source,
                    (v.run_id or "")[:8],
                    format_time(v.created_at),
                    v.author,
                ]
                for v in versions
            ],
            title=f"model {name}",
        )
        return
    mv = api.get(name, version=version, stage=stage, alias=alias, at=when)
    if mv.deleted:  # its lineage and card text went with it; the card's data is kept
        from keel.core.model_card import dump_card

        lineage, card_text = None, dump_card(mv.card) if mv.card else ""
    else:
        lineage, card_text = api.lineage(name, mv.version), api.card_text(name, mv.version)
    if as_json:
        extra = {} if when is None else {"as_of": format_at(when)}
        print_json({**mv.to_dict(), **extra, "lineage": None if lineage is None else lineage.to_dict()})
        return
    _print_version(mv, lineage, card_text, when)


def _show_versions_at(name: str, when: int, as_json: bool) -> None:
    from keel.cli.render import print_json, table

    versions = _api().versions_at(name, when)
    if as_json:
        print_json({"name": name, "as_of": format_at(when), "versions": [v.to_dict() for v in versions]})
        return
    table(
        ["version", "stage", "aliases", "source", "registered", "deleted"],
        [
            [v.version, v.stage, ", ".join(v.aliases), v.source, format_at(v.created_at), format_at(v.deleted_at)]
            for v in versions
        ],
        title=f"model {name} as of {format_at(when)}",
        keep={0, 4, 5},
    )


def _print_version(mv: Any, lineage: Any, card_text: str, when: int | None = None) -> None:
    from keel.cli.render import console, fmt
    from keel.core.entities import format_time

    out = console()
    as_of = "" if when is None else f"  (as of {format_at(when)})"
    gone = f"  DELETED at {format_at(mv.deleted_at)}" if mv.deleted else ""
    out.print(f"[bold yellow]{mv.ref}[/bold yellow]  stage {mv.stage}{as_of}{gone}", highlight=False)
    rows = [
        ("aliases", ", ".join(mv.aliases)),
        ("source", mv.source),
        ("pinned", mv.source_digest or ""),
        ("run", mv.run_id or ""),
        ("registered", f"{format_time(mv.created_at)} by {mv.author}"),
        ("description", mv.description),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(mv.tags.items()))),
    ]
    for key, value in rows:
        if value:
            out.print(f"  {key:<12} {value}", highlight=False, markup=False)
    run = None if lineage is None else lineage.run
    if run is not None:
        if run.params:
            out.print(
                "  params       " + ", ".join(f"{k}={fmt(v)}" for k, v in sorted(run.params.items())), markup=False
            )
        if run.metrics:
            out.print(
                "  metrics      " + ", ".join(f"{k}={fmt(v)}" for k, v in sorted(run.metrics.items())), markup=False
            )
    if lineage is not None and lineage.inputs:
        out.print("  used         " + ", ".join(str(e.entity) for e in lineage.inputs), markup=False)
    if card_text:
        out.print("  card:", highlight=False)
        for line in card_text.rstrip("\n").splitlines():
            out.print(f"    {line}", highlight=False, markup=False)


@models_app.command("register")
def models_register(
    name: NameArg,
    source: Annotated[str, typer.Option("--source", "-s", help="runs:/<run>/<path>, a path, s3://, hf://...")],
    card: Annotated[Path | None, typer.Option("--card", "-c", help="A model card (YAML or JSON).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="The run that produced it (for a non-run source).")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What this version is.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="key=value (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the next version of a model."""
    from keel.cli.render import key_values, print_json

    mv = _api().register(name, source, card=card, description=description, tags=key_values(tag, "tag"), run_id=run)
    if as_json:
        print_json(mv.to_dict())
        return
    typer.echo(f"registered {mv.ref}" + (f" (run {mv.run_id[:8]})" if mv.run_id else ""))


@models_app.command("stage")
def models_stage(
    name: NameArg,
    version: Annotated[int, typer.Argument(help="Version number.")],
    stage: Annotated[str, typer.Argument(help="None, Staging, Production or Archived.")],
    archive_existing: Annotated[
        bool, typer.Option("--archive-existing", help="Archive the other versions in that stage.")
    ] = False,
    reason: ReasonOpt = "",
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            metavar="STAGE",
            help="Move only if the version is in STAGE now; otherwise refuse (exit 4) and say where it is.",
        ),
    ] = None,
) -> None:
    """Move a version to a stage (recorded with who, when and why)."""
    api = _api()
    mv = _registry().transition_stage(
        name, version, stage, archive_existing=archive_existing, reason=reason, expected=expect
    )
    moves = api.history(name)
    move = next(m for m in reversed(moves) if m.ref == f"stage:{mv.version}")
    typer.echo(f"{mv.ref}: {move.old} -> {mv.stage}")
    archived = [
        m.ref.partition(":")[2]
        for m in moves
        if archive_existing and m.at == move.at and m.ref.startswith("stage:") and m.ref != move.ref
    ]
    if archived:
        typer.echo(f"archived: version {', '.join(archived)}")


@alias_app.command("set")
def alias_set(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[int | None, typer.Argument(help="Version to point at (or --at).")] = None,
    at: AtOpt = None,
    reason: ReasonOpt = "",
    expect: ExpectOpt = None,
) -> None:
    """Point an alias at a version, or with --at where it pointed at that time (recorded)."""
    if (version is None) == (at is None):
        raise InvalidInput(
            "give a version to point at, or --at TIME, not both", f"keel models alias set {name} {alias} 3"
        )
    move = _registry().set_alias(name, alias, version, reason=reason, expected=_expected(expect), at=_when(at))
    typer.echo(f"{name}@{move.ref}: {move.old or '(unset)'} -> {move.new}")


@alias_app.command("rollback")
def alias_rollback(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias to move back.")],
    steps: Annotated[int, typer.Option("--steps", "-n", min=1, help="How many of its last moves to undo.")] = 1,
    reason: ReasonOpt = "",
    expect: ExpectOpt = None,
) -> None:
    """Undo the alias's last move (git's reset ALIAS@{1}); --steps N undoes the last N.
    A rollback is itself a move: rolling back twice returns where you started."""
    move = _registry().rollback(name, alias, reason=reason, expected=_expected(expect), steps=steps)
    typer.echo(f"{name}@{move.ref}: {move.old or '(unset)'} -> {move.new}")


@alias_app.command("rm")
def alias_rm(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    reason: ReasonOpt = "",
    expect: ExpectOpt = None,
) -> None:
    """Remove an alias (recorded)."""
    move = _registry().delete_alias(name, alias, reason=reason, expected=_expected(expect))
    typer.echo(f"{name}@{move.ref}: {move.old} -> (removed)")


@alias_app.command("point", hidden=True)
def models_alias(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion.")],
    version: Annotated[int | None, typer.Argument(help="Version to point at.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    reason: ReasonOpt = "",
    expect: ExpectOpt = None,
) -> None:
    """keel models alias NAME ALIAS VERSION / NAME ALIAS --delete: as 'set' and 'rm'."""
    if delete == (version is not None):
        raise InvalidInput("give a version to point at, or --delete", f"keel models alias set {name} {alias} 3")
    if delete:
        alias_rm(name, alias, reason, expect)
    else:
        alias_set(name, alias, version, None, reason, expect)


@models_app.command("delete")
def models_delete(
    name: NameArg,
    version: Annotated[int | None, typer.Option("--version", "-v", help="Delete only this version.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
    reason: ReasonOpt = "",
) -> None:
    """Delete a version (or, without --version, the whole model); recorded in the reflog."""
    what = f"{name} version {version}" if version is not None else f"model {name} and all its versions"
    if not yes:
        raise InvalidInput(f"deleting {what} needs --yes", f"keel models delete {name} ... --yes")
    api = _api()
    moves = api.delete_version(name, version, reason) if version is not None else api.delete_model(name, reason)
    aliases = [m.ref for m in moves if not m.ref.startswith(("version:", "model"))]
    typer.echo(f"deleted {what}" + (f" (aliases removed: {', '.join(aliases)})" if aliases else ""))


@models_app.command("history")
def models_history(name: NameArg, as_json: JsonOpt = False) -> None:
    """Every stage change and alias move: when (UTC, as --at reads it), its reflog id, who,
    what, from, to, why."""
    from keel.cli.render import print_json, table

    moves = _api().history(name)
    if as_json:
        print_json([m.to_dict() for m in moves])
        return
    rows = []
    for m in moves:
        if m.ref.startswith("stage:"):
            what = f"version {m.ref.partition(':')[2]} stage"
            old, new = m.old or "None", m.new or "None"
        elif m.ref.startswith("version:") or m.ref == "model":
            what = f"{m.ref.replace(':', ' ')} deleted"
            old, new = m.old or "", "(deleted)"
        else:
            what = f"alias {m.ref}"
            old, new = m.old or "(unset)", m.new or "(removed)"
        rows.append([format_at(m.at), m.id, what, old, new, m.who, m.reason])
    table(["when", "id", "what", "from", "to", "who", "reason"], rows, title=f"model {name}", keep={0, 1})


@models_app.command("card")
def models_card(
    name: NameArg,
    version: Annotated[int, typer.Argument(help="Version number.")],
    export: Annotated[Path | None, typer.Option("--export", "-o", help="Write the card to this file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a version's model card (or export it: the imported YAML, byte for byte)."""
    api = _api()
    if export is not None:
        api.export_card(name, version, export)
        typer.echo(f"wrote {export}")
        return
    if as_json:
        typer.echo(json.dumps(api.card(name, version), indent=2))
        return
    text = api.card_text(name, version)
    typer.echo(text.rstrip("\n") if text else f"{name}@{version} has no model card")


def _text(value: Any) -> Any:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else value


@models_app.command("compare")
def models_compare(
    name: NameArg,
    a: Annotated[int, typer.Argument(help="Version A.")],
    b: Annotated[int, typer.Argument(help="Version B.")],
    as_json: JsonOpt = False,
) -> None:
    """Card, metric and param differences between two versions."""
    from keel.cli.render import console, print_json, table

    diff = _api().compare(name, a, b)
    if as_json:
        print_json(diff.to_dict())
        return
    va, vb = f"v{a}", f"v{b}"
    if diff.fields:
        shown = [[k, _text(x), _text(y)] for k, x, y in diff.fields]
        table(["field", va, vb], shown, title=f"{name}: version {a} vs {b}")
    if diff.metrics:
        table(["metric", va, vb, "delta"], [[m.key, m.a, m.b, m.delta] for m in diff.metrics], title="metrics")
    if diff.card:
        table(
            ["card", va, vb],
            [[c.path, c.old if c.in_old else "(absent)", c.new if c.in_new else "(absent)"] for c in diff.card],
            title="model card",
        )
    if diff.params:
        table(["param", va, vb], [[k, x, y] for k, x, y in diff.params], title="run params")
    if not (diff.fields or diff.metrics or diff.card or diff.params):
        console().print(f"{name} versions {a} and {b} do not differ", highlight=False)
