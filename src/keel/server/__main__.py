"""``python -m keel.server``: run the team server in this process.

::

    python -m keel.server [start] --store URL [--objects URL] [--host 127.0.0.1] [--port 8080] [--workers N]
                          [--embedder-url URL ...] [--log-format text|json] [--metrics-port PORT]
    python -m keel.server ui [--host 127.0.0.1] [--port 8765] [--no-browser]   # keel ui: no sign-in, no token
    python -m keel.server admin|user|token|grant|revoke|grants|audit|sweep ...   # the same as keel server admin|...

``keel server start`` and ``keel ui`` exec this module, so the server runs in the
process the operator started: its SIGTERM or Ctrl-C stops the server. The admin
commands are the keel CLI's ``keel server ...`` (:mod:`keel.sdk.admin`); given
here they are handed over to it (exec, same interpreter). No user or password
ships with keel: the first admin is created on the server host (which can reach
the database), and its token is printed once. The store may also come from
``KEEL_SERVER_STORE`` / ``KEEL_SERVER_OBJECTS``.

The server embeds knowledge bases only through model-provider endpoints configured
on it: its ``OPENAI_BASE_URL`` (or OpenAI's default) with its ``OPENAI_API_KEY``, and
each ``--embedder-url`` (or ``KEEL_SERVER_EMBEDDER_URLS``, separated by spaces): a
client may pick one of those as ``base_url``, never another URL, and never sends a key.
The server's ``OPENAI_API_KEY`` goes to every endpoint listed: list only ones you trust with it.

Logs go to stderr, one access line per request, as text or JSON lines (``--log-format``,
:mod:`keel.server.logs`). ``--metrics-port`` also serves the Prometheus metrics on
127.0.0.1 without a token (``/metrics`` on the main port needs a site admin's token). With
several workers, each worker exits when this process dies (:mod:`keel.server.supervision`).
At start the server sweeps what killed processes left (stale spool files, abandoned S3
multipart uploads: :mod:`keel.services.leftovers`). See docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from keel.errors import KeelError

__all__ = ["main"]

# The admin commands live in the keel CLI (keel server ...); this module hands them over.
_ADMIN_COMMANDS = frozenset({"admin", "user", "token", "grant", "revoke", "grants", "audit", "sweep"})
# Options of this parser that take a value, so a value is never mistaken for a command.
_VALUED = frozenset(
    ("--store", "--objects", "--host", "--port", "--workers", "--max-upload", "--max-json", "--log-level")
) | {"--embedder-url", "--log-format", "--metrics-port"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keel.server",
        description="keel's team server (the same as: keel server start)",
        epilog="Users, tokens and grants: keel server --help (python -m keel.server admin|user|token|... too).",
    )
    parser.add_argument("--store", default=os.environ.get("KEEL_SERVER_STORE"), help="database URL")
    parser.add_argument("--objects", default=os.environ.get("KEEL_SERVER_OBJECTS"), help="object store URL")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--max-upload", type=int, default=None, help="largest artifact upload, bytes")
    parser.add_argument("--max-json", type=int, default=None, help="largest JSON request body, bytes (64 MiB)")
    parser.add_argument(
        "--embedder-url",
        action="append",
        metavar="URL",
        help="an OpenAI-compatible embeddings base URL clients may choose (repeatable; "
        "default: KEEL_SERVER_EMBEDDER_URLS; the server's OPENAI_BASE_URL is always allowed)",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines as text (default) or JSON lines"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="also serve the Prometheus metrics on 127.0.0.1:PORT without a token (/metrics on the main port "
        "needs a site admin's token)",
    )
    parser.add_argument(
        "--secure-cookies", action="store_true", help="web UI cookies only over https (behind a TLS proxy)"
    )
    sub = parser.add_subparsers(dest="command")

    ui = sub.add_parser(
        "ui", help="serve this workspace's web UI and MLflow API on 127.0.0.1, no sign-in, no token (keel ui)"
    )
    ui.add_argument(
        "--host", dest="ui_host", default="127.0.0.1", help="a loopback address to listen on (default 127.0.0.1)"
    )
    ui.add_argument("--port", dest="ui_port", type=int, default=8765, help="port (default 8765)")
    ui.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    ui.add_argument("--store", dest="ui_store", default=None, help="database URL (default: the nearest .keel/)")
    ui.add_argument("--objects", dest="ui_objects", default=None, help="object store URL")
    ui.add_argument("--log-level", dest="ui_log_level", default="warning")
    return parser


def _serve(args: argparse.Namespace) -> int:
    import logging.config

    import uvicorn

    from keel.server.app import ENV_MAX_JSON, ENV_MAX_UPLOAD, ENV_OBJECTS, ENV_STORE, app_from_env
    from keel.server.logs import logging_config
    from keel.server.supervision import ENV_SUPERVISOR, multiprocess_metrics, serve_metrics
    from keel.server.ui.sessions import ENV_SECURE_COOKIES
    from keel.services.embedders import ENV_EMBEDDER_URLS

    log_config = logging_config(args.log_level, args.log_format)
    logging.config.dictConfig(log_config)

    os.environ[ENV_STORE] = args.store
    if args.objects:
        os.environ[ENV_OBJECTS] = args.objects
    if args.max_upload:
        os.environ[ENV_MAX_UPLOAD] = str(args.max_upload)
    if args.max_json:
        os.environ[ENV_MAX_JSON] = str(args.max_json)
    if args.secure_cookies:
        os.environ[ENV_SECURE_COOKIES] = "1"
    if args.embedder_url:
        os.environ[ENV_EMBEDDER_URLS] = " ".join(args.embedder_url)
    context = app_from_env().state.keel  # open, migrate and check the store before listening
    try:
        _sweep_at_start(context)
    finally:
        context.store.close()
    if args.workers > 1:
        os.environ[ENV_SUPERVISOR] = str(os.getpid())  # the workers exit when this process dies
    with multiprocess_metrics(args.workers):
        try:
            metrics_server = serve_metrics(args.metrics_port) if args.metrics_port else None
        except OSError as exc:
            print(f"error: cannot serve metrics on 127.0.0.1:{args.metrics_port}: {exc}", file=sys.stderr)
            return 2
        try:
            uvicorn.run(
                "keel.server.supervision:worker_app",
                factory=True,
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level=args.log_level,
                log_config=log_config,
                access_log=False,  # keel writes the access log (keel.access), with request ids
                proxy_headers=True,
            )
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
    return 0


def _sweep_at_start(context: object) -> None:
    """Remove what killed processes left: stale spool files, and the store's abandoned
    multipart uploads (or a local store's temporary files). A failure is logged, not fatal."""
    import logging

    from keel.services.leftovers import sweep

    try:
        sweep(context.store.objects, context.tmp_dir)  # type: ignore[attr-defined]
    except KeelError as exc:
        logging.getLogger("keel.server").warning("the start-up sweep of leftovers failed: %s", exc)


def _open_browser_when_up(server: object, url: str) -> None:
    import time
    import webbrowser

    deadline = time.monotonic() + 30
    while not getattr(server, "started", False) and time.monotonic() < deadline:
        time.sleep(0.1)
    if getattr(server, "started", False):
        webbrowser.open(url)


def _ui(args: argparse.Namespace) -> int:
    """``keel ui``: serve the local workspace on 127.0.0.1 with no sign-in, and the MLflow API and
    OTLP route with no token (the local user is a site admin): on a loopback address only."""
    import threading

    import uvicorn

    from keel.core.urls import mask_url
    from keel.server.app import create_app
    from keel.server.auth import check_local_bind
    from keel.services.workspace import resolve_store_urls

    host = args.ui_host.strip("[]")
    database, objects, root = resolve_store_urls(args.ui_store, args.ui_objects)
    check_local_bind(host, mask_url(database))  # no sign-in, no token: never on an address others reach
    app = create_app(database, objects, local=True)
    base = f"http://{f'[{host}]' if ':' in host else host}:{args.ui_port}"
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=args.ui_port, log_level=args.ui_log_level))
    if not args.no_browser:
        threading.Thread(target=_open_browser_when_up, args=(server, f"{base}/ui/"), daemon=True).start()
    where = root or mask_url(database)
    print(f"keel ui: {where} at {base}/ui/ (MLflow: MLFLOW_TRACKING_URI={base}; Ctrl-C to stop)", flush=True)
    server.run()
    return 0


def _command_at(words: list[str]) -> int | None:
    """The index of the first word that is a command, not an option or an option's value."""
    value_next = False
    for index, word in enumerate(words):
        if value_next:
            value_next = False
        elif word in _VALUED:
            value_next = True
        elif not word.startswith("-"):
            return index
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (the admin commands exec ``python -m keel server ...``)."""
    words = list(sys.argv[1:] if argv is None else argv)
    at = _command_at(words)
    if at is not None and words[at] in _ADMIN_COMMANDS:  # options given before the command go after it
        sys.stdout.flush()
        sys.stderr.flush()
        cli = [sys.executable, "-m", "keel", "server", *words[at:], *words[:at]]
        os.execv(sys.executable, cli)
    if at is not None and words[at] == "start":
        del words[at]
    args = _parser().parse_args(words)
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
        return _serve(args)
    except KeelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
