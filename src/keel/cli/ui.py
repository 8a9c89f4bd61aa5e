"""``keel ui``: this workspace's web UI on 127.0.0.1, no sign-in.

The CLI does not import ``keel.server``; like ``keel server`` this command runs
``python -m keel.server ui`` in a child process (same interpreter and environment,
so the child finds the same workspace) and exits with its exit code::

    keel ui                 # http://127.0.0.1:8765/ui/, opens a browser
    keel ui --port 9000 --no-browser
"""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

__all__ = ["ui_command"]


def ui_command(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8765,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a web browser.")] = False,
) -> None:
    """Browse this workspace's runs in a web UI on 127.0.0.1 (single user, no sign-in)."""
    args = [sys.executable, "-m", "keel.server", "ui", "--port", str(port)]
    if no_browser:
        args.append("--no-browser")
    sys.stdout.flush()
    child = subprocess.Popen(args)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: let it shut down cleanly
        code = child.wait()
    raise typer.Exit(code)
