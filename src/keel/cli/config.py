"""``keel config ...``: per-environment configuration from the command line."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["config_app"]

config_app = typer.Typer(
    help="Environment configuration: show (with where each value came from), diff, history.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
DirOpt = Annotated[str, typer.Option("--dir", "-d", help="The configuration folder.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a value: llm.temperature=0.2 (repeatable).")
]


def _api() -> Any:
    from keel.sdk import config

    return config


def _value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@config_app.command("show")
def config_show(
    env: Annotated[str | None, typer.Option("--env", "-e", help="The environment (default: $KEEL_ENV).")] = None,
    directory: DirOpt = "config",
    sets: SetOpt = None,
    schema: Annotated[str | None, typer.Option("--schema", help="Validate against this JSON Schema file.")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the file:line each value came from.")] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Show the snapshot recorded for the environment in use at this time (2026-12-07T10:00:00.123Z "
            "as 'keel config history' prints, an offset, or 1733500000s), not the files.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The resolved configuration of an environment, secrets as ***."""
    import os

    import yaml

    from keel.cli.render import print_json, table
    from keel.errors import InvalidInput

    if at is not None:
        if sets or schema or explain:
            raise InvalidInput(
                "--at shows a recorded snapshot: --set, --schema and --explain apply to the files",
                "leave them out, or drop --at to resolve the files now",
            )
        _show_recorded(env or os.environ.get("KEEL_ENV"), at, as_json)
        return
    if not env and not os.environ.get("KEEL_ENV"):
        envs = _api().available_envs(directory)
        where = f" (environments in {directory}/: {', '.join(envs)})" if envs else ""
        command = "keel config show" + ("" if directory == "config" else f" --dir {directory}")
        raise InvalidInput(
            "which environment?", f"run {command} --env {envs[0] if envs else 'production'}{where}, or set KEEL_ENV"
        )
    cfg = _api().load(env, directory, sets or (), schema, attach=False)
    if explain:
        rows = cfg.explain()
        if as_json:
            print_json([{"key": k, "value": v, "source": s} for k, v, s in rows])
        else:
            table(["key", "value", "source"], [[k, _value(v), s] for k, v, s in rows])
        return
    if as_json:
        print_json(cfg.to_dict())
        return
    typer.echo(f"# {cfg.env}: {' + '.join(cfg.sources)} (snapshot {cfg.snapshot_hash[:12]})")
    typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


def _show_recorded(env: str | None, at: str, as_json: bool) -> None:
    import yaml

    from keel.cli.render import print_json
    from keel.core.times import format_at, parse_at
    from keel.errors import InvalidInput

    if not env:
        raise InvalidInput("which environment?", f"keel config show --env production --at {at}, or set KEEL_ENV")
    snap, content = _api().snapshot(env=env, at=at)
    if as_json:
        print_json({**snap.to_dict(), "content": content})
        return
    typer.echo(
        f"# {snap.env} at {format_at(parse_at(at))}: snapshot {snap.hash[:12]} recorded {format_at(snap.created_at)} "
        f"from {' + '.join(snap.sources) or '-'}"
    )
    typer.echo(yaml.safe_dump(content, sort_keys=False, allow_unicode=True, default_flow_style=False), nl=False)


@config_app.command("diff")
def config_diff(
    env_a: Annotated[str, typer.Argument(help="The first environment.")],
    env_b: Annotated[str, typer.Argument(help="The second environment.")],
    directory: DirOpt = "config",
    as_json: JsonOpt = False,
) -> None:
    """What differs between two environments (secrets as ***)."""
    from keel.cli.render import print_json

    changes = _api().diff(env_a, env_b, directory)
    if as_json:
        print_json([c.to_dict() for c in changes])
        return
    if not changes:
        typer.echo(f"{env_a} and {env_b} are the same")
        return
    for c in changes:
        if not c.in_old:
            typer.echo(f"+ {c.path}: {_value(c.new)}")
        elif not c.in_new:
            typer.echo(f"- {c.path}: {_value(c.old)}")
        else:
            typer.echo(f"~ {c.path}: {_value(c.old)} -> {_value(c.new)}")


@config_app.command("history")
def config_history(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Recorded snapshots, newest first, with the runs that used them."""
    from keel.cli.render import print_json, table
    from keel.core.times import format_at

    snapshots = _api().history(env)
    if as_json:
        print_json([s.to_dict() for s in snapshots])
        return
    table(
        ["snapshot", "env", "recorded", "sources", "runs"],
        [
            [
                s.hash[:12],
                s.env,
                format_at(s.created_at),
                ", ".join(s.sources),
                f"{len(s.runs)}: " + ", ".join(r[:8] for r in s.runs[:5]) + (" ..." if len(s.runs) > 5 else "")
                if s.runs
                else "0",
            ]
            for s in snapshots
        ],
    )
