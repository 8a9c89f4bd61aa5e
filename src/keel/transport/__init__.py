"""Talking to a keel server: the HTTP client and the credentials it uses.

- :mod:`keel.transport.credentials`: base URLs and the credentials file
  (``KEEL_TOKEN``, ``keel login``); standard library only.
- :mod:`keel.transport.client`: :class:`HttpClient` on httpx (timeouts,
  retries, proxies, TLS, streaming, the one error mapping).

httpx is imported when a client is first used, not with ``import keel`` nor with
this package: local mode never loads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keel.transport.credentials import (
    ENV_CONFIG_DIR,
    ENV_TOKEN,
    credentials_path,
    forget_token,
    normalize_base_url,
    save_token,
    token_for,
)

if TYPE_CHECKING:
    from keel.transport.client import HttpClient, HttpResponse

__all__ = [
    "ENV_CONFIG_DIR",
    "ENV_TOKEN",
    "HttpClient",
    "HttpResponse",
    "credentials_path",
    "forget_token",
    "normalize_base_url",
    "save_token",
    "token_for",
]

_LAZY = {"HttpClient", "HttpResponse"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from keel.transport import client

        return getattr(client, name)
    raise AttributeError(f"module 'keel.transport' has no attribute {name!r}")
