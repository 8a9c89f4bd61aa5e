"""Render URLs and connection strings for messages and logs: never with a credential.

:func:`mask_url` is the one function every message, log line and ``keel info``
output renders a database URL, an object-store URL or a server URL with. Like
SQLAlchemy's ``URL.render_as_string(hide_password=True)`` it replaces the
password of the userinfo with ``***``; it also masks the value of every query
(and fragment) parameter named like a secret (``password``, ``secret``,
``token``, ``key``, ``signature``, ``credential``, AWS's ``X-Amz-Signature``,
``X-Amz-Credential``, ``X-Amz-Security-Token``...), parameters whose value is
itself a URL (``?endpoint_url=http://user:pw@host``), and libpq's
``key=value`` connection strings (``host=db password=...``).

:func:`mask_urls_in` does the same for every URL or ``password=...`` pair found
inside a longer text (a driver's error message, a log line).

Pure: no I/O, standard library only. (``keel.core.redaction`` redacts secrets
from what applications log; the two may be joined later.)
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = ["MASK", "is_secret_parameter", "mask_url", "mask_urls_in"]

MASK = "***"

# A parameter is secret when one of its words (split at _ - . and camelCase) is one of these.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "key",
        "apikey",
        "sig",
        "signature",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "sslpassword",
        "sslkey",
    }
)
# Keys that contain a secret word but name no secret.
_NOT_SECRET = frozenset({"max_tokens", "token_limit", "passthrough"})
_AMZ_PLAIN = frozenset({"x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# scheme://user[:password]@: the user has no ':' or '/'; the password runs to the last '@' before
# any '?' or '#' (so an unencoded '/' or '@' in it is masked too, never half shown).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@?#\s]*)(?::(?P<password>[^?#\s]*))?@")
# A URL inside free text: scheme://, then anything up to whitespace or a quote (a closing
# bracket after it is kept in the match: cutting there could show half of a password).
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
# libpq / ODBC style ``name=value`` pairs (also ``name = 'quoted value'``).
_PAIR = re.compile(
    r"""(?P<name>\b[A-Za-z][A-Za-z0-9_.\-]*)(?P<sep>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s;,&'"]+)"""
)


def is_secret_parameter(name: str) -> bool:
    """Whether a query parameter or connection-string key called ``name`` holds a secret."""
    lowered = name.lower()
    if lowered in _NOT_SECRET:
        return False
    if lowered.startswith("x-amz-"):  # a presigned URL: only its algorithm, date and expiry are plain
        return lowered not in _AMZ_PLAIN
    return any(word.lower() in _SECRET_WORDS for word in _WORD.findall(name))


def mask_url(url: object) -> str:
    """``url`` as text fit for a message or a log line: password and secret parameters masked.

    ``postgresql+psycopg://keel:s3cr3t@db:5432/keel?sslpassword=x`` becomes
    ``postgresql+psycopg://keel:***@db:5432/keel?sslpassword=***``; a userinfo that
    is a key alone (``https://KEY@sentry.example/1``) is masked whole; a path, a
    ``sqlite:///`` URL or a URL without credentials comes back unchanged. A libpq
    connection string (``host=db user=keel password=s3cr3t``) has its secret pairs
    masked. Anything else (None, an object) is rendered with ``str`` first. Never raises.
    """
    text = "" if url is None else str(url)
    if "://" in text:
        return _mask_one(text)
    return _mask_pairs(text) if "=" in text else text


def mask_urls_in(text: object) -> str:
    """``text`` with every URL in it rendered by :func:`mask_url`, and every
    ``password=...``-like pair masked (a driver's message, a log line)."""
    found = "" if text is None else str(text)
    if "://" in found:
        found = _URL_IN_TEXT.sub(lambda match: _mask_one(match.group(0)), found)
    return _mask_pairs(found) if "=" in found else found


def _mask_one(url: str) -> str:
    """One URL (``scheme://...``), credentials masked."""
    match = _USERINFO.match(url)
    if match is None:
        head_end = url.index("://") + 3
        head, rest = url[:head_end], url[head_end:]
    else:
        scheme, user, password = match.group("scheme"), match.group("user"), match.group("password")
        if password is not None:
            head = f"{scheme}{user}:{MASK}@"
        elif user and scheme.lower().startswith(("http:", "https:")):
            head = f"{scheme}{MASK}@"  # a key alone as the userinfo (a DSN): the user is the secret
        else:
            head = match.group(0)
        rest = url[match.end() :]
    rest, hash_sign, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if query:
        query = _mask_query(query)
    if "=" in fragment:
        fragment = _mask_query(fragment)
    return f"{head}{rest}{question}{query}{hash_sign}{fragment}"


def _mask_query(query: str) -> str:
    pieces = []
    for piece in query.split("&"):
        name, eq, value = piece.partition("=")
        if eq and is_secret_parameter(unquote(name)):
            value = MASK
        elif eq and "://" in unquote(value):
            inner = unquote(value)
            masked = _mask_one(inner)
            if masked != inner:
                value = quote(masked, safe=":/*@")
        pieces.append(f"{name}{eq}{value}")
    return "&".join(pieces)


def _mask_pairs(text: str) -> str:
    """``name=value`` pairs whose name is secret, masked (a libpq connection string)."""

    def replace(match: re.Match[str]) -> str:
        name, sep, value = match.group("name"), match.group("sep"), match.group("value")
        if value.startswith(MASK) or "://" in value or not is_secret_parameter(name):
            return match.group(0)
        quote_char = value[0] if value[:1] in ("'", '"') else ""
        return f"{name}{sep}{quote_char}{MASK}{quote_char}"

    return _PAIR.sub(replace, text)
