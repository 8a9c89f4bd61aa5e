"""``keel server ...``: run the team server and administer its users.

The CLI talks only to the sdk, and nothing imports ``keel.server``; so this
command hands its arguments to ``python -m keel.server`` in a child process
(same interpreter, same environment) and exits with its exit code::

    keel server --store postgresql+psycopg://... --objects s3://bucket/prefix --port 8080
    keel server admin create alice --store ...
    keel server user create bob --store ...
    keel server token create bob --expires-days 30 --store ...
    keel server grant bob my-project writer --store ...
"""

from __future__ import annotations

import subprocess
import sys

import typer

__all__ = ["SERVER_HELP", "SERVER_SETTINGS", "server_command"]

SERVER_HELP = (
    "Run the team server (REST API with token auth) or administer it: "
    "keel server --store URL [--objects URL] [--host H] [--port P] [--workers N]; "
    "keel server admin create NAME | user create NAME | token create USER | token revoke ID | "
    "grant USER PROJECT ROLE (each with --store URL). See docs/server.md."
)


def server_command(ctx: typer.Context) -> None:
    """Run or administer the team server (arguments go to ``python -m keel.server``)."""
    args = [sys.executable, "-m", "keel.server", *ctx.args]
    sys.stdout.flush()
    sys.stderr.flush()
    child = subprocess.Popen(args)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: let it shut down cleanly
        code = child.wait()
    raise typer.Exit(code)


SERVER_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
