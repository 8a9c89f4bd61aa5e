"""``keel server ...``: run the team server, and administer its users, tokens and grants.

::

    keel server start --store postgresql+psycopg://... --objects s3://bucket/prefix --port 8080
    keel server admin create alice --store URL         # the first site admin; prints a token once
    keel server user create bob --store URL
    keel server token create bob --expires-days 30 --store URL
    keel server grant bob my-project writer --store URL
    keel server sweep --store URL --objects s3://bucket/prefix   # what killed processes left

``start`` replaces this process with the server (``exec`` of ``python -m keel.server``,
same interpreter and environment): the pid a supervisor started is the server's, so
its SIGTERM stops the server. The CLI does not import ``keel.server``. The admin
commands use :mod:`keel.sdk.admin` on the server's database; no server needs to run.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from keel.sdk.admin import ServerAdmin

__all__ = ["exec_server", "server_app"]

ENV_STORE = "KEEL_SERVER_STORE"
ENV_OBJECTS = "KEEL_SERVER_OBJECTS"

server_app = typer.Typer(
    help="Run the team server (REST API, web UI with sign-in, MLflow API) and administer its users, "
    "tokens and role grants. See docs/server.md.",
    no_args_is_help=True,
)
admin_app = typer.Typer(help="Bootstrap: create a site admin and print its token.", no_args_is_help=True)
user_app = typer.Typer(help="Create, list, disable or enable users; set a web UI password.", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
server_app.add_typer(admin_app, name="admin")
server_app.add_typer(user_app, name="user")
server_app.add_typer(token_app, name="token")

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar=ENV_STORE, show_envvar=True, help="The server's database URL."),
]
# Admin commands touch only the database; --objects is accepted so older scripts keep working.
ObjectsIgnored = Annotated[str | None, typer.Option("--objects", hidden=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
UserArg = Annotated[str, typer.Argument(help="User name.")]


def exec_server(args: list[str], env: dict[str, str] | None = None) -> None:
    """Replace this process with ``python -m keel.server ARGS`` (never returns).

    Not a child process: killing the pid that ran ``keel server start`` or ``keel ui``
    must stop the server and free its port.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "keel.server", *args]
    if env is None:
        os.execv(sys.executable, argv)
    os.execve(sys.executable, argv, env)


def _when(ms: int | None, none: str = "") -> str:
    """A millisecond timestamp as ISO 8601 in UTC, ``2027-01-06T14:26:03Z`` (``none`` for None).

    Text output only: ``--json`` keeps epoch milliseconds, as every other ``--json`` output does.
    """
    if ms is None:
        return none
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _admin(store: str | None) -> ServerAdmin:
    from keel.sdk.admin import ServerAdmin

    return ServerAdmin(store)


# -- running it ---------------------------------------------------------------------------------
@server_app.command("start")
def server_start(
    store: StoreOpt = None,
    objects: Annotated[
        str | None,
        typer.Option(
            "--objects", envvar=ENV_OBJECTS, show_envvar=True, help="Object store URL (default: beside SQLite)."
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes (one with SQLite).")] = 1,
    max_upload: Annotated[int | None, typer.Option("--max-upload", help="Largest artifact upload, bytes.")] = None,
    max_json: Annotated[int | None, typer.Option("--max-json", help="Largest JSON or form body, bytes.")] = None,
    embedder_url: Annotated[
        list[str] | None,
        typer.Option("--embedder-url", help="An embeddings base URL clients may choose (repeatable)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")] = "info",
    log_format: Annotated[str, typer.Option("--log-format", help="Log lines as text or json (JSON lines).")] = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Also serve Prometheus metrics on 127.0.0.1:PORT, no token."),
    ] = None,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Web UI cookies only over https (behind a TLS proxy).")
    ] = False,
) -> None:
    """Run the team server in this process (Ctrl-C or SIGTERM stops it); it migrates the database first."""
    from keel.errors import InvalidInput

    if not store:
        raise InvalidInput("no server store given", "pass --store URL (a database URL) or set KEEL_SERVER_STORE")
    # The store URLs may hold credentials: they go in the environment, not in the argv `ps` shows.
    env = {**os.environ, ENV_STORE: store}
    if objects:
        env[ENV_OBJECTS] = objects
    args = ["--host", host, "--port", str(port), "--workers", str(workers), "--log-level", log_level]
    args += ["--log-format", log_format]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    if max_upload:
        args += ["--max-upload", str(max_upload)]
    if max_json:
        args += ["--max-json", str(max_json)]
    for url in embedder_url or ():
        args += ["--embedder-url", url]
    if secure_cookies:
        args.append("--secure-cookies")
    exec_server(args, env)


# -- users --------------------------------------------------------------------------------------
@admin_app.command("create")
def admin_create(
    name: UserArg, store: StoreOpt = None, objects: ObjectsIgnored = None, as_json: JsonOpt = False
) -> None:
    """Create a site admin and print a token for it once (it never expires: revoke it later)."""
    with _admin(store) as admin:
        secret, info = admin.create_admin(name)
    note = f"created site admin {name}; token {info.id} (shown once, never expires: revoke it later):"
    _print_secret(secret, info, as_json, note)


@user_app.command("create")
def user_create(
    name: UserArg,
    is_admin: Annotated[bool, typer.Option("--admin", help="A site admin (may do everything).")] = False,
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
) -> None:
    """Create a user (give them roles with 'keel server grant', a token with 'keel server token create')."""
    with _admin(store) as admin:
        admin.create_user(name, is_admin)
    typer.echo(f"created {'site admin' if is_admin else 'user'} {name}")


@user_app.command("list")
def user_list(store: StoreOpt = None, objects: ObjectsIgnored = None, as_json: JsonOpt = False) -> None:
    """List users."""
    from keel.cli.render import print_json, table

    with _admin(store) as admin:
        users = admin.list_users()
    if as_json:
        print_json([u.to_dict() for u in users])
        return
    table(
        ["user", "admin", "disabled", "created"],
        [[u.name, "yes" if u.is_admin else "", "yes" if u.disabled else "", _when(u.created_at)] for u in users],
    )


@user_app.command("disable")
def user_disable(name: UserArg, store: StoreOpt = None, objects: ObjectsIgnored = None) -> None:
    """Disable a user: every token of theirs stops working at once."""
    with _admin(store) as admin:
        admin.set_disabled(name, True)
    typer.echo(f"disabled user {name}")


@user_app.command("enable")
def user_enable(name: UserArg, store: StoreOpt = None, objects: ObjectsIgnored = None) -> None:
    """Enable a disabled user again."""
    with _admin(store) as admin:
        admin.set_disabled(name, False)
    typer.echo(f"enabled user {name}")


@user_app.command("password")
def user_password(name: UserArg, store: StoreOpt = None, objects: ObjectsIgnored = None) -> None:
    """Set a user's web UI password (typed twice, or the first line of stdin); ends their browser sessions."""
    with _admin(store) as admin:
        admin.get_user(name)  # an unknown user fails before the password is asked for
        admin.set_password(name, _read_password(name))
    typer.echo(f"set the password of {name}; their browser sessions were ended")


def _read_password(name: str) -> str:
    """A new password from a prompt (typed twice) or, when stdin is not a terminal, its first line."""
    import getpass

    from keel.errors import InvalidInput

    if sys.stdin.isatty():
        first = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("again: ") != first:
            raise InvalidInput("the two passwords differ", "type the same password twice")
        return first
    return sys.stdin.readline().rstrip("\r\n")


# -- tokens -------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    user: UserArg,
    name: Annotated[str, typer.Option("--name", help="A label for the token.")] = "",
    expires_days: Annotated[float, typer.Option("--expires-days", help="Days until it expires; 0: never.")] = 90.0,
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token for a user and print it once (only its hash is stored)."""
    with _admin(store) as admin:
        secret, info = admin.create_token(user, name, expires_days)
    expiry = f"expires {_when(info.expires_at)}" if info.expires_at else "never expires"
    _print_secret(secret, info, as_json, f"token {info.id} for {info.user}, {expiry} (shown once):")


def _print_secret(secret: str, info: Any, as_json: bool, message: str) -> None:
    """The token's secret: the last line of the text output (scripts take it from there), or JSON."""
    if as_json:
        from keel.cli.render import print_json

        print_json({**info.to_dict(), "token": secret})
        return
    typer.echo(message)
    typer.echo(secret)


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Argument(help="Only this user's tokens.")] = None,
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
    as_json: JsonOpt = False,
) -> None:
    """List API tokens, newest first (never their secrets)."""
    from keel.cli.render import print_json, table
    from keel.core.entities import now_ms

    with _admin(store) as admin:
        tokens = admin.list_tokens(user)
    if as_json:
        print_json([t.to_dict() for t in tokens])
        return
    now = now_ms()

    def state(token: Any) -> str:
        if token.revoked_at:
            return f"revoked {_when(token.revoked_at)}"
        return "expired" if token.expires_at is not None and token.expires_at <= now else "active"

    table(
        ["id", "user", "name", "created", "expires", "state"],
        [[t.id, t.user, t.name, _when(t.created_at), _when(t.expires_at, "never"), state(t)] for t in tokens],
    )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (from 'keel server token list').")],
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
) -> None:
    """Revoke an API token now: every server process refuses it from its next request."""
    with _admin(store) as admin:
        admin.revoke_token(token_id)
    typer.echo(f"revoked token {token_id}")


# -- roles and the audit log ----------------------------------------------------------------------
@server_app.command("grant")
def grant(
    user: UserArg,
    project: Annotated[str, typer.Argument(help="A project, @registries (prompts, models, ...) or * (everything).")],
    role: Annotated[str, typer.Argument(help="reader, writer or admin.")],
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
) -> None:
    """Give a user a role on a project (replacing the role they had there)."""
    with _admin(store) as admin:
        admin.grant(user, project, role)
    typer.echo(f"{user} is {role} on {project}")


@server_app.command("revoke")
def revoke(
    user: UserArg,
    project: Annotated[str, typer.Argument(help="A project, @registries or *.")],
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
) -> None:
    """Take a user's role on a project away."""
    with _admin(store) as admin:
        admin.revoke_grant(user, project)
    typer.echo(f"{user} has no role on {project} now")


@server_app.command("grants")
def grants(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's roles.")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only roles on this project.")] = None,
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
    as_json: JsonOpt = False,
) -> None:
    """List who holds which role on which project."""
    from keel.cli.render import print_json, table

    with _admin(store) as admin:
        rows = admin.grants(user, project)
    if as_json:
        print_json(rows)
        return
    table(
        ["user", "project", "role", "granted by", "at"],
        [[g["user"], g["project"], g["role"], g["granted_by"], _when(g["at"])] for g in rows],
    )


@server_app.command("audit")
def audit(
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many entries.")] = 50,
    store: StoreOpt = None,
    objects: ObjectsIgnored = None,
    as_json: JsonOpt = False,
) -> None:
    """The latest user, token and grant changes, newest first."""
    from keel.cli.render import print_json, table

    with _admin(store) as admin:
        entries = admin.audit_log(limit)
    if as_json:
        print_json(entries)
        return
    table(
        ["at", "actor", "action", "target", "detail"],
        [[_when(e["at"]), e["actor"], e["action"], e["target"], _audit_detail(e["detail"])] for e in entries],
    )


def _audit_detail(detail: Any) -> str:
    """An audit entry's detail as JSON text, its ``*_at`` times readable (``expires_at``: None is never)."""
    import json

    if isinstance(detail, dict):
        detail = {
            key: _when(value, "never") if key.endswith("_at") and (value is None or type(value) is int) else value
            for key, value in detail.items()
        }
    return json.dumps(detail, sort_keys=True)


# -- leftovers ----------------------------------------------------------------------------------
@server_app.command("sweep")
def sweep(
    store: StoreOpt = None,
    objects: Annotated[
        str | None,
        typer.Option(
            "--objects", envvar=ENV_OBJECTS, show_envvar=True, help="Object store URL (default: beside SQLite)."
        ),
    ] = None,
    tmp_dir: Annotated[
        str | None, typer.Option("--tmp-dir", help="The server's temporary folder (default: TMPDIR).")
    ] = None,
    tmp_age: Annotated[
        float | None,
        typer.Option("--tmp-age", help="Seconds a dead process's spool file must be untouched (default 3600)."),
    ] = None,
    upload_age: Annotated[
        float | None,
        typer.Option("--upload-age", help="Seconds since an unfinished multipart upload started (default 86400)."),
    ] = None,
    traces_older_than: Annotated[
        str | None,
        typer.Option(
            "--traces-older-than",
            envvar="KEEL_TRACE_RETENTION",
            show_envvar=True,
            help="Trace retention: remove spans older than this (30d, 12w, a date); PostgreSQL drops whole months.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove what killed server processes left: stale spool files, and abandoned multipart
    uploads in the bucket (a local store: stale temporary files). The server also does this at start.
    With --traces-older-than (or KEEL_TRACE_RETENTION) it also applies trace retention."""
    from keel.cli.render import print_json
    from keel.sdk.admin import prune_traces, sweep_leftovers

    report = sweep_leftovers(store, objects, tmp_dir=tmp_dir, tmp_age=tmp_age, upload_age=upload_age)
    pruned = prune_traces(store, objects, traces_older_than) if traces_older_than else None
    if as_json:
        print_json({**report.to_dict(), **({"traces_pruned": pruned} if pruned is not None else {})})
        return
    if pruned is not None:
        typer.echo(
            f"traces older than {traces_older_than} removed: {pruned['traces']:,} traces, {pruned['spans']:,} spans"
            + (f", {pruned['partitions']} monthly partitions" if pruned["partitions"] else "")
        )
    typer.echo(f"spool files removed: {report.spool_files} ({report.spool_bytes:,} bytes)")
    if report.store_files:
        typer.echo(f"store temporary files removed: {report.store_files} ({report.store_bytes:,} bytes)")
    typer.echo(f"multipart uploads aborted: {len(report.uploads)}")
    for key in report.uploads:
        typer.echo(f"  aborted {key}")
