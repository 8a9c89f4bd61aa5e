"""``keel prompts ...``: the prompt registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.errors import InvalidInput

__all__ = ["prompts_app"]

prompts_app = typer.Typer(help="Versioned prompts: register, load, alias, diff, sync with files.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases (production, staging, ...) and their audit trail.", no_args_is_help=True)
prompts_app.add_typer(alias_app, name="alias")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DirOpt = Annotated[Path, typer.Option("--dir", "-d", help="The prompts/ folder.")]
ExpectOpt = Annotated[
    str | None,
    typer.Option(
        "--expect",
        metavar="VERSION",
        help="Move only if the alias points at VERSION now ('unset': only if it does not exist); "
        "otherwise refuse (exit 4) and say where it points.",
    ),
]


AtOpt = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="TIME",
        help="As of this time: ISO 8601 with Z or an offset (2026-12-07T10:00:00.123Z, as keel prints "
        "times), or epoch seconds/milliseconds with a unit (1733500000s, 1733500000000ms).",
    ),
]


def _api() -> Any:
    from keel.sdk import prompts

    return prompts


def _registry() -> Any:
    """The prompt registry of this store (local or a server): what :mod:`keel.sdk.prompts`
    calls, without its loading cache and trace notes; its alias moves take ``expected``."""
    from keel.sdk.session import get_session

    return get_session().prompts


def _expected(text: str | None) -> str | None:
    """``--expect`` as the registry takes it: None (no check), ``""`` (unset) or a version."""
    if text is None:
        return None
    return "" if text.strip().lower() in ("", "unset") else text.strip()


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict; values are parsed as JSON when they are JSON (0.7 -> float)."""
    from keel.cli.render import key_values

    out: dict[str, Any] = {}
    for key, value in key_values(items, what).items():
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"no file at {path}", "check the path") from None
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}", "fix the file") from None


@prompts_app.command("list")
def prompts_list(as_json: JsonOpt = False) -> None:
    """Every prompt with its latest version and aliases."""
    from keel.cli.render import print_json, table
    from keel.core.times import format_at

    rows = _api().list_prompts()
    if as_json:
        print_json([version.to_dict() for _name, version in rows])
        return
    table(
        ["prompt", "latest", "aliases", "model", "variables", "registered", "changelog"],
        [
            [
                name,
                v.version,
                ", ".join(v.aliases),
                v.content.model,
                ", ".join(v.content.variables),
                format_at(v.created_at),
                v.changelog.splitlines()[0] if v.changelog else "",
            ]
            for name, v in rows
        ],
    )


def _metrics_of_users(name: str, version: str) -> tuple[int, dict[str, float]]:
    """How many runs used ``name@version`` and the mean of each of their metrics."""
    from keel.sdk.client import Client

    client = Client(create=False)
    users = client.used_by(f"prompt:{name}@{version}")  # runs only: keel.lineage.used_by also reads traces
    if not users:
        return 0, {}
    totals: dict[str, list[float]] = {}
    for record in client.get_runs(users):
        for key, value in record.metrics.items():
            totals.setdefault(key, []).append(value)
    return len(users), {k: sum(v) / len(v) for k, v in totals.items()}


@prompts_app.command("show")
def prompts_show(
    name: Annotated[str, typer.Argument(help="Prompt name.")], at: AtOpt = None, as_json: JsonOpt = False
) -> None:
    """Versions with their aliases, and the metrics of the runs that used each version;
    with --at, the versions registered by then and the aliases as they were then."""
    from keel.cli.render import print_json, table
    from keel.core.times import format_at, parse_at

    when = None if at is None else parse_at(at)
    versions = _registry().versions(name, when)  # the registry: no loading cache, no template compiling
    used = {v.version: _metrics_of_users(name, v.version) for v in versions}
    if as_json:
        print_json(
            [{**v.to_dict(), "runs": used[v.version][0], "run_metrics_mean": used[v.version][1]} for v in versions]
        )
        return
    metric_keys = sorted({k for _n, m in used.values() for k in m})[:5]
    table(
        ["version", "aliases", "model", "registered", "author", "runs", *metric_keys, "changelog"],
        [
            [
                v.version,
                ", ".join(v.aliases),
                v.content.model,
                format_at(v.created_at),
                v.author,
                used[v.version][0],
                *(used[v.version][1].get(k) for k in metric_keys),
                v.changelog.splitlines()[0] if v.changelog else "",
            ]
            for v in versions
        ],
        title=f"prompt {name}" if when is None else f"prompt {name} as of {format_at(when)}",
    )


@prompts_app.command("log")
def prompts_log(name: Annotated[str, typer.Argument(help="Prompt name.")], as_json: JsonOpt = False) -> None:
    """Every version with its full changelog entry, newest first."""
    from keel.cli.render import console, print_json
    from keel.core.times import format_at

    versions = _api().versions(name)
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    out = console()
    for v in versions:
        aliases = f"  ({', '.join(v.aliases)})" if v.aliases else ""
        out.print(f"[bold yellow]{v.name}@{v.version}[/bold yellow]{aliases}  {format_at(v.created_at)}  {v.author}")
        out.print(f"    {v.changelog}\n", highlight=False, markup=False)


@prompts_app.command("diff")
def prompts_diff(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    a: Annotated[str, typer.Argument(help="Older version or alias.")],
    b: Annotated[str, typer.Argument(help="Newer version or alias.")],
    as_json: JsonOpt = False,
    unified: Annotated[bool, typer.Option("--unified", help="Plain unified diff text, no colour.")] = False,
) -> None:
    """What changed between two versions: template, model, parameters, variables."""
    from keel.cli.render import console, print_json

    d = _api().diff(name, a, b)
    if as_json:
        print_json(d.to_dict())
        return
    if unified:
        typer.echo(d.template_diff, nl=False)
        return
    out = console()
    for line in d.template_diff.splitlines():
        style = (
            "green"
            if line.startswith("+")
            else "red"
            if line.startswith("-")
            else "cyan"
            if line.startswith("@")
            else None
        )
        out.print(line, style=style, highlight=False, markup=False)
    if d.model:
        out.print(f"model: {d.model[0]} -> {d.model[1]}", markup=False)
    for key, value in d.parameters_added.items():
        out.print(f"+ parameter {key} = {value!r}", style="green", markup=False)
    for key, value in d.parameters_removed.items():
        out.print(f"- parameter {key} = {value!r}", style="red", markup=False)
    for key, (old, new) in d.parameters_changed.items():
        out.print(f"~ parameter {key}: {old!r} -> {new!r}", style="yellow", markup=False)
    if d.variables_added:
        out.print(f"+ variables {', '.join(d.variables_added)}", style="green", markup=False)
    if d.variables_removed:
        out.print(f"- variables {', '.join(d.variables_removed)}", style="red", markup=False)
    if d.few_shot_changed:
        out.print("~ few-shot examples changed", style="yellow")
    if d.response_schema_changed:
        out.print("~ response schema changed", style="yellow")
    out.print(f"required bump: {d.required_bump or 'none (identical)'}")


@prompts_app.command("register")
def prompts_register(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    file: Annotated[Path, typer.Option("--file", "-f", help="Template file (.txt; .json for a chat message list).")],
    changelog: Annotated[str, typer.Option("--message", "-m", help="Why it changed (required).")],
    model: Annotated[str, typer.Option("--model", help="Model the prompt is written for.")] = "",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Parameter key=value (repeatable).")] = None,
    few_shot: Annotated[Path | None, typer.Option("--few-shot", help="Few-shot examples (JSON file).")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="Response schema (JSON file).")] = None,
    bump: Annotated[
        str | None, typer.Option("--bump", help="major, minor or patch (default: smallest allowed).")
    ] = None,
    version: Annotated[str | None, typer.Option("--version", help="Explicit version instead of --bump.")] = None,
) -> None:
    """Register a new version from a file (identical content returns the existing version)."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise InvalidInput(f"no file at {file}", "check the path") from None
    template: Any = _read_json(file) if file.suffix == ".json" else text
    before = {v.version for v in _versions_or_empty(name)}
    p = _api().register(
        name,
        template,
        model=model,
        parameters=_pairs(param, "parameter"),
        few_shot=_read_json(few_shot),
        response_schema=_read_json(schema),
        changelog=changelog,
        bump=bump,
        version=version,
    )
    verb = "unchanged: already registered as" if p.version in before else "registered"
    typer.echo(f"{verb} {p.name}@{p.version}")


def _versions_or_empty(name: str) -> list[Any]:
    from keel.errors import NotFound

    try:
        return list(_api().versions(name))
    except NotFound:
        return []


@prompts_app.command("render")
def prompts_render(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    var: Annotated[list[str] | None, typer.Option("--var", "-v", help="Variable key=value (repeatable).")] = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render a prompt with variables (a chat prompt prints its messages); with --at, the
    version the alias (or latest) meant at that time."""
    from keel.cli.render import print_json

    prompt = _api().load(ref, ttl=0) if at is None else _api().Prompt(_api().get(ref, at=at))
    values = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in _pairs(var, "variable").items()}
    rendered = prompt.render(**values)
    if as_json:
        print_json({"prompt": prompt.ref, "rendered": rendered})
    elif isinstance(rendered, str):
        typer.echo(rendered, nl=not rendered.endswith("\n"))
    else:
        for message in rendered:
            typer.echo(f"[{message['role']}]\n{message['content']}")


StepsOpt = Annotated[
    int,
    typer.Option("--steps", "-n", min=1, help="Undo the alias's last N moves (default 1: the last move)."),
]


def _rollback(name: str, alias: str, steps: int, reason: str, expect: str | None) -> None:
    move = _registry().rollback(name, alias, reason, expected=_expected(expect), steps=steps)
    typer.echo(f"{name}@{move.ref}: {move.old} -> {move.new}")


@prompts_app.command("rollback")
def prompts_rollback(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias to move back.")],
    steps: StepsOpt = 1,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = "",
    expect: ExpectOpt = None,
) -> None:
    """Undo an alias's last move (or last N with --steps); the rollback is itself a move."""
    _rollback(name, alias, steps, reason, expect)


@alias_app.command("rollback")
def alias_rollback(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias to move back.")],
    steps: StepsOpt = 1,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = "",
    expect: ExpectOpt = None,
) -> None:
    """Undo an alias's last move (or last N with --steps): it points where it pointed before
    them. The rollback is itself a move, so two single rollbacks return to the start."""
    _rollback(name, alias, steps, reason, expect)


@alias_app.command("set")
def alias_set(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    version: Annotated[str | None, typer.Argument(help="Version (or another alias) to point at; or give --at.")] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", metavar="TIME", help="Point it where it pointed at TIME (a time as keel prints it)."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = "",
    expect: ExpectOpt = None,
) -> None:
    """Point an alias at a version, or where it pointed at a time (recorded with who, when and why)."""
    from keel.core.times import parse_at

    if (version is None) == (at is None):
        raise InvalidInput("give a VERSION or --at TIME (one of them)", f"keel prompts alias set {name} {alias} 1.3.0")
    when = None if at is None else parse_at(at)
    move = _registry().set_alias(name, alias, version, reason, expected=_expected(expect), at=when)
    typer.echo(f"{name}@{move.ref}: {move.old or '(unset)'} -> {move.new}")


@alias_app.command("rm")
def alias_rm(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the audit trail).")] = "",
    expect: ExpectOpt = None,
) -> None:
    """Remove an alias (recorded)."""
    move = _registry().delete_alias(name, alias, reason, expected=_expected(expect))
    typer.echo(f"{name}@{alias}: {move.old} -> (removed)")


@alias_app.command("history")
def alias_history(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    alias: Annotated[str | None, typer.Argument(help="One alias (default: all).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every alias move, oldest first: its reflog id, when (UTC), who, from, to, why. A time
    shown here, given to --at, answers with the state right after that move."""
    from keel.cli.render import print_json, table
    from keel.core.times import format_at

    moves = _api().history(name, alias)
    if as_json:
        print_json([m.to_dict() for m in moves])
        return
    table(
        ["id", "when", "alias", "from", "to", "who", "reason"],
        [[m.id, format_at(m.at), m.ref, m.old or "", m.new or "(removed)", m.who, m.reason] for m in moves],
    )


@prompts_app.command("check")
def prompts_check(
    directory: DirOpt = Path("prompts"),
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 4 also when the files hold content the registry's latest version does not (a new "
            "version or a revert 'keel prompts sync' would register): after a sync, load() serves what the "
            "files say.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """For CI: can the prompt files be synced, and do they agree with the registry? Problems that
    stop a sync: exit 4 and one line each (file:line, what to do). Versions a sync would register
    (new content, or a revert in git) are listed as pending: exit 0, or 4 with --strict."""
    from keel.cli.render import print_json

    problems = _api().check(directory)
    blocking = [p for p in problems if not p.pending]
    pending = [p for p in problems if p.pending]
    if as_json:
        print_json([p.to_dict() for p in problems])
    else:
        for problem in blocking:
            typer.echo(str(problem), err=True)
        for problem in pending:
            typer.echo(str(problem), err=strict)
        if not problems:
            typer.echo(f"{directory}: prompt files and registry agree")
        elif not blocking:
            typer.echo(
                f"{directory}: the registry does not serve {len(pending)} prompt(s) as the files say yet: "
                "run 'keel prompts sync'",
                err=strict,
            )
    if blocking or (strict and pending):
        raise typer.Exit(4)


@prompts_app.command("sync")
def prompts_sync(directory: DirOpt = Path("prompts"), as_json: JsonOpt = False) -> None:
    """Register every changed prompt from a prompts/ folder (all or nothing)."""
    from keel.cli.render import print_json
    from keel.sdk.prompts import PromptFilesRejected

    try:
        results = _api().sync(directory)
    except PromptFilesRejected as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        typer.echo(f"error: {len(exc.problems)} problem(s), nothing was registered", err=True)
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        print_json([r.to_dict() for r in results])
        return
    created = [r for r in results if r.created]
    for result in created:
        typer.echo(f"registered {result.name}@{result.version}")
    typer.echo(f"{len(created)} registered, {len(results) - len(created)} unchanged")


@prompts_app.command("export")
def prompts_export(
    name: Annotated[str, typer.Argument(help="Prompt name.")],
    directory: DirOpt = Path("prompts"),
    version: Annotated[str | None, typer.Option("--version", help="Version (default: latest).")] = None,
) -> None:
    """Write a registered prompt back to the prompts/ folder (then sync is a no-op)."""
    for path in _api().export(name, directory, version):
        typer.echo(str(path))
