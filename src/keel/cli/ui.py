"""``keel ui``: this workspace's web UI on 127.0.0.1, no sign-in.

The CLI does not import ``keel.server``: this command replaces its own process
with ``python -m keel.server ui`` (``exec``, same interpreter and environment,
so the server finds the same workspace). The pid of ``keel ui`` is the server's:
Ctrl-C or a SIGTERM to it stops the server and frees the port. The server opens
the browser once it listens::

    keel ui                 # http://127.0.0.1:8765/ui/, opens a browser
    keel ui --port 9000 --no-browser
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ui_command"]


def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8765,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a web browser.")] = False,
) -> None:
    """Browse this workspace's runs in a web UI on 127.0.0.1 (single user, no sign-in)."""
    from keel.cli.server import exec_server

    exec_server(["ui", "--port", str(port), *(["--no-browser"] if no_browser else [])])
