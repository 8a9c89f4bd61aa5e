"""``keel login [URL]`` and ``keel logout [URL]``: remember or forget a keel server's API token.

The token is checked against the server before it is saved (``credentials.toml``,
readable by its owner only; see :mod:`keel.sdk.remote`). Without a URL both use
``KEEL_URI``. Then ``KEEL_URI=URL`` is all a shell needs: every command works
against the server::

    keel login http://keel.example.com:8000          # prompts for the token
    keel login http://keel.example.com:8000 --token keel_...
    keel logout http://keel.example.com:8000
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from keel.errors import InvalidInput

__all__ = ["login_command", "logout_command"]

UrlArg = Annotated[
    str | None, typer.Argument(help="The server, e.g. http://keel.example.com:8000 (default: KEEL_URI).")
]


def _server(url: str | None) -> str:
    url = url or os.environ.get("KEEL_URI")
    if not url:
        raise InvalidInput("which server?", "give its URL: keel login http://host:port (or set KEEL_URI)")
    return url


def login_command(
    url: UrlArg = None,
    token: Annotated[
        str | None, typer.Option("--token", help="The API token (default: asked for, not echoed).")
    ] = None,
) -> None:
    """Check an API token against a keel server and remember it for that server."""
    from keel.sdk.remote import login

    server = _server(url)
    if token is None:
        token = typer.prompt("API token", hide_input=True)
    found = login(server, token)
    typer.echo(f"logged in to {found['server']} as {found['user']['name']} (token saved in {found['credentials']})")


def logout_command(url: UrlArg = None) -> None:
    """Forget the stored token of a keel server."""
    from keel.sdk.remote import logout

    server = _server(url)
    if logout(server):
        typer.echo(f"logged out of {server}")
    else:
        typer.echo(f"no stored token for {server}")
