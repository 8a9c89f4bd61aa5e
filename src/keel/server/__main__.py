"""``python -m keel.server``: run the team server, and administer its users.

::

    python -m keel.server --store URL [--objects URL] [--host 127.0.0.1] [--port 8080] [--workers N]
    python -m keel.server admin create NAME --store URL     # first admin; prints a token once
    python -m keel.server user create NAME [--admin] --store URL
    python -m keel.server token create USER [--name LABEL] [--expires-days N] --store URL
    python -m keel.server token revoke TOKEN_ID --store URL
    python -m keel.server grant USER PROJECT|* reader|writer|admin --store URL
    python -m keel.server user password NAME --store URL      # web UI sign-in; reads stdin or prompts
    python -m keel.server ui [--port 8765] [--no-browser]      # this workspace's UI on 127.0.0.1, no sign-in

No user or password ships with keel: the first admin is created on the server
host (which can reach the database), and its token is printed once. The store
may also come from ``KEEL_SERVER_STORE`` / ``KEEL_SERVER_OBJECTS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from keel.core.entities import now_ms
from keel.errors import KeelError

__all__ = ["main"]

_ACTOR = "server-cli"


def _store_args(parser: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands must not reset what was given before them: SUPPRESS keeps the top-level value.
    store = os.environ.get("KEEL_SERVER_STORE") if top else argparse.SUPPRESS
    objects = os.environ.get("KEEL_SERVER_OBJECTS") if top else argparse.SUPPRESS
    parser.add_argument("--store", default=store, help="database URL")
    parser.add_argument("--objects", default=objects, help="object store URL")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keel.server", description="keel's team server")
    _store_args(parser, top=True)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--max-upload", type=int, default=None, help="largest artifact upload, bytes")
    parser.add_argument("--max-json", type=int, default=None, help="largest JSON request body, bytes (64 MiB)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--secure-cookies", action="store_true", help="web UI cookies only over https (behind a TLS proxy)"
    )
    sub = parser.add_subparsers(dest="command")

    admin = sub.add_parser("admin", help="bootstrap: create a site admin and print its token")
    admin.add_argument("action", choices=["create"])
    admin.add_argument("name")
    _store_args(admin)

    user = sub.add_parser("user", help="create, disable or enable a user, or set their web UI password")
    user.add_argument("action", choices=["create", "disable", "enable", "list", "password"])
    user.add_argument("name", nargs="?")
    user.add_argument("--admin", action="store_true", help="a site admin")
    _store_args(user)

    token = sub.add_parser("token", help="create or revoke an API token")
    token.add_argument("action", choices=["create", "revoke", "list"])
    token.add_argument("target", nargs="?", help="user name (create, list) or token id (revoke)")
    token.add_argument("--name", default="", help="a label for the token")
    token.add_argument("--expires-days", type=float, default=90.0, help="0: never expires (default 90)")
    _store_args(token)

    grant = sub.add_parser("grant", help="give a user a role on a project, or on * (everything)")
    grant.add_argument("user")
    grant.add_argument("project")
    grant.add_argument("role", choices=["reader", "writer", "admin"])
    _store_args(grant)

    ui = sub.add_parser("ui", help="serve this workspace's web UI on 127.0.0.1, no sign-in (keel ui)")
    ui.add_argument("--port", dest="ui_port", type=int, default=8765, help="port on 127.0.0.1 (default 8765)")
    ui.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    ui.add_argument("--store", dest="ui_store", default=None, help="database URL (default: the nearest .keel/)")
    ui.add_argument("--objects", dest="ui_objects", default=None, help="object store URL")
    ui.add_argument("--log-level", dest="ui_log_level", default="warning")
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from keel.server.app import ENV_MAX_JSON, ENV_MAX_UPLOAD, ENV_OBJECTS, ENV_STORE, app_from_env
    from keel.server.ui.sessions import ENV_SECURE_COOKIES

    os.environ[ENV_STORE] = args.store
    if args.objects:
        os.environ[ENV_OBJECTS] = args.objects
    if args.max_upload:
        os.environ[ENV_MAX_UPLOAD] = str(args.max_upload)
    if args.max_json:
        os.environ[ENV_MAX_JSON] = str(args.max_json)
    if args.secure_cookies:
        os.environ[ENV_SECURE_COOKIES] = "1"
    app_from_env().state.keel.store.close()  # open, migrate and check the store before listening
    uvicorn.run(
        "keel.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        proxy_headers=True,
    )
    return 0


def _admin(args: argparse.Namespace) -> int:
    from keel.services.auth import AuthStore
    from keel.services.workspace import open_store

    store = open_store(args.store, args.objects, cached=False)
    try:
        auth = AuthStore(store.db)
        if args.command == "admin":
            auth.create_user(args.name, is_admin=True, actor=_ACTOR)
            secret, info = auth.create_token(args.name, "bootstrap", None, _ACTOR)
            print(f"created site admin {args.name}; token {info.id} (shown once, never expires: revoke it later):")
            print(secret)
        elif args.command == "user":
            if args.action == "list":
                for user in auth.list_users():
                    print(f"{user.name}\t{'admin' if user.is_admin else ''}\t{'disabled' if user.disabled else ''}")
            elif args.action == "password":
                name = _need(args.name, "a user name")
                auth.set_password(name, _read_password(name), _ACTOR)
                print(f"set the password of {name}; their browser sessions were ended")
            elif args.action == "create":
                auth.create_user(_need(args.name, "a user name"), is_admin=args.admin, actor=_ACTOR)
                print(f"created user {args.name}")
            else:
                auth.set_disabled(_need(args.name, "a user name"), args.action == "disable", _ACTOR)
                print(f"{args.action}d user {args.name}")
        elif args.command == "token":
            if args.action == "create":
                expires = None if args.expires_days <= 0 else now_ms() + int(args.expires_days * 86_400_000)
                secret, info = auth.create_token(_need(args.target, "a user name"), args.name, expires, _ACTOR)
                print(f"token {info.id} for {info.user} (shown once):")
                print(secret)
            elif args.action == "revoke":
                auth.revoke_token(_need(args.target, "a token id"), _ACTOR)
                print(f"revoked token {args.target}")
            else:
                for tok in auth.list_tokens(args.target):
                    state = "revoked" if tok.revoked_at else ""
                    print(f"{tok.id}\t{tok.user}\t{tok.name}\t{tok.expires_at or 'never'}\t{state}")
        elif args.command == "grant":
            auth.grant(args.user, args.project, args.role, _ACTOR)
            print(f"{args.user} is {args.role} on {args.project}")
    finally:
        store.close()
    return 0


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


def _open_browser_when_up(server: object, url: str) -> None:
    import time
    import webbrowser

    deadline = time.monotonic() + 30
    while not getattr(server, "started", False) and time.monotonic() < deadline:
        time.sleep(0.1)
    if getattr(server, "started", False):
        webbrowser.open(url)


def _ui(args: argparse.Namespace) -> int:
    """``keel ui``: serve the local workspace on 127.0.0.1 with no sign-in (the local user is a site admin)."""
    import threading

    import uvicorn

    from keel.server.app import create_app
    from keel.server.ui import UISettings
    from keel.services.workspace import resolve_store_urls

    database, objects, root = resolve_store_urls(args.ui_store, args.ui_objects)
    app = create_app(database, objects)
    app.state.keel_ui = UISettings(local=True)
    url = f"http://127.0.0.1:{args.ui_port}/ui/"
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.ui_port, log_level=args.ui_log_level))
    if not args.no_browser:
        threading.Thread(target=_open_browser_when_up, args=(server, url), daemon=True).start()
    print(f"keel ui: {root or database} at {url} (Ctrl-C to stop)", flush=True)
    server.run()
    return 0


def _need(value: str | None, what: str) -> str:
    from keel.errors import InvalidInput

    if not value:
        raise InvalidInput(f"missing {what}", "see: python -m keel.server --help")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "ui":
        try:
            return _ui(args)
        except KeelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    if not args.store:
        print("error: no store (pass --store URL or set KEEL_SERVER_STORE)", file=sys.stderr)
        return 2
    try:
        return _serve(args) if args.command is None else _admin(args)
    except KeelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
