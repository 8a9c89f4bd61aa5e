"""``keel ui``: this workspace's web UI and MLflow API on 127.0.0.1, no sign-in, no token.

The CLI does not import ``keel.server``: this command replaces its own process
with ``python -m keel.server ui`` (``exec``, same interpreter and environment,
so the server finds the same workspace). The pid of ``keel ui`` is the server's:
Ctrl-C or a SIGTERM to it stops the server and frees the port. The server opens
the browser once it listens::

    keel ui                 # http://127.0.0.1:8765/ui/, opens a browser
    keel ui --port 9000 --no-browser
    MLFLOW_TRACKING_URI=http://127.0.0.1:8765 python train.py   # MLflow code, no token

It serves one person on their own machine, as ``mlflow ui`` does: a loopback address
only (``--host 0.0.0.0`` is refused: share a workspace with ``keel server start``), and
it refuses requests naming another host or sent by another site's page
(:mod:`keel.server.auth`).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["ui_command"]


def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8765,
    host: Annotated[
        str,
        typer.Option("--host", help="A loopback address to listen on: 127.0.0.1, ::1 or localhost (no others)."),
    ] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a web browser.")] = False,
) -> None:
    """Browse this workspace in a web UI, and serve MLflow clients, on 127.0.0.1 (one user, no sign-in, no token)."""
    from keel.cli.server import exec_server

    exec_server(["ui", "--host", host, "--port", str(port), *(["--no-browser"] if no_browser else [])])
