"""Who may do what: users, API tokens, roles and grants (pure domain, no I/O).

Tokens are ``keel_`` plus 43 URL-safe characters (32 random bytes). Only their
SHA-256 is stored: a token is shown once, when created, and a copy of the
database cannot be replayed as credentials.

Roles are ``reader`` < ``writer`` < ``admin``, granted per project name, on
``@registries`` (the workspace-wide registries: prompts, models, KBs,
conversations, LLM calls, config, flags, A/B tests), or on ``*`` (every project
and the registries). A site admin may do everything, including managing users
and tokens. The rows live in :mod:`keel.meta.auth`; the checks every entry
point makes are in :mod:`keel.services.auth` and :mod:`keel.services.contract`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keel.core.names import check_name
from keel.errors import InvalidInput

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "RANK",
    "REGISTRIES",
    "ROLES",
    "TOKEN_PREFIX",
    "WORKSPACE",
    "LoginLimits",
    "Principal",
    "TokenInfo",
    "User",
    "check_role",
    "check_scope",
    "hash_password",
    "hash_token",
    "verify_password",
]

ROLES = ("reader", "writer", "admin")
RANK = {role: i + 1 for i, role in enumerate(ROLES)}
WORKSPACE = "*"  # a grant on every project and on the workspace-wide registries
REGISTRIES = "@registries"  # a grant on the prompt and model registries only
TOKEN_PREFIX = "keel_"


def hash_token(secret: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    import hashlib  # here, as below: every local command imports this module, few hash

    return hashlib.sha256(secret.encode()).hexdigest()


# scrypt cost: 16 MiB and ~50 ms per check, the same for a wrong user name as a right one.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 1 << 14, 8, 1
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The stored form of a password: ``scrypt$N$r$p$salt$hash`` (hex), with a fresh random salt."""
    import hashlib
    import secrets

    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored`` (a :func:`hash_password` value); constant-time compare.

    With no stored hash a dummy hash is computed anyway, so the time taken does not
    tell whether the user exists or has a password.
    """
    import hashlib
    import hmac

    if not stored:
        hash_password(password, b"\0" * 16)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual.hex(), digest)


@dataclass(frozen=True)
class LoginLimits:
    """Sign-in rate limits: at most ``per_user`` failures for one user name and ``per_address``
    from one client address within ``window_s`` seconds; past that, sign-in is refused (429)
    until the oldest counted failure leaves the window."""

    per_user: int = 5
    per_address: int = 20
    window_s: int = 900


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`ROLES`, else raise InvalidInput."""
    if role not in RANK:
        raise InvalidInput(f"invalid role {role!r}", f"use one of {', '.join(ROLES)}")
    return role


def check_scope(project: str) -> str:
    """Return ``project`` if it is a grantable scope (a project name, ``*`` or ``@registries``)."""
    return project if project in (WORKSPACE, REGISTRIES) else check_name(project, "project name")


@dataclass(frozen=True)
class User:
    """A person or service account that holds tokens."""

    id: int
    name: str
    is_admin: bool
    disabled: bool
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "is_admin": self.is_admin, "disabled": self.disabled, "created_at": self.created_at}


@dataclass(frozen=True)
class TokenInfo:
    """A token's metadata (never its secret)."""

    id: str
    user: str
    name: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, the token used, and the user's grants."""

    user: User
    token: TokenInfo
    grants: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The user name (recorded as ``who`` in audit trails)."""
        return self.user.name

    def rank(self, project: str) -> int:
        """0 (no access) or the rank of the best role on ``project``."""
        if self.user.is_admin:
            return RANK["admin"]
        return max(RANK.get(self.grants.get(project, ""), 0), RANK.get(self.grants.get(WORKSPACE, ""), 0))

    def readable(self) -> list[str] | None:
        """Project names this principal may read, or None for every project."""
        if self.user.is_admin or WORKSPACE in self.grants:
            return None
        return sorted(p for p in self.grants if p != REGISTRIES)


