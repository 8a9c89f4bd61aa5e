"""Users, API tokens, project role grants, web sessions and the admin audit log: their rows.

Lookup of a token is by its hash (a unique index), so no comparison of secrets
happens in Python. The entities and role rules are in :mod:`keel.core.auth`.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from keel.core.auth import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    TOKEN_PREFIX,
    LoginLimits,
    Principal,
    TokenInfo,
    User,
    check_role,
    check_scope,
    hash_password,
    hash_token,
    verify_password,
)
from keel.core.entities import now_ms
from keel.core.names import check_name
from keel.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from keel.meta.dbapi import ConstraintViolation as SAIntegrityError
from keel.meta.engine import Database

__all__ = ["AuthStore"]

_USER = "SELECT id, name, is_admin, disabled, created_at, password_hash FROM auth_users"
_TOKEN = (
    "SELECT t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at, u.name AS user_name "
    "FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id"
)
_SQL = {
    "audit": "INSERT INTO auth_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
    "audit_log": "SELECT at, actor, action, target, detail FROM auth_audit ORDER BY id DESC LIMIT ?",
    "new_user": "INSERT INTO auth_users (name, is_admin, created_at) VALUES (?, ?, ?)",
    "user": _USER + " WHERE name = ?",
    "users": _USER + " ORDER BY name",
    "set_disabled": "UPDATE auth_users SET disabled = ? WHERE id = ?",
    "new_token": (
        "INSERT INTO auth_tokens (id, user_id, token_hash, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "tokens": _TOKEN + " ORDER BY t.created_at DESC",
    "user_tokens": _TOKEN + " WHERE u.name = ? ORDER BY t.created_at DESC",
    "token": _TOKEN + " WHERE t.id = ?",
    "revoke_token": "UPDATE auth_tokens SET revoked_at = ? WHERE id = ?",
    "grants_of": "SELECT project, role FROM auth_grants WHERE user_id = ?",
    "drop_grant": "DELETE FROM auth_grants WHERE user_id = ? AND project = ?",
    "new_grant": "INSERT INTO auth_grants (user_id, project, role, granted_by, created_at) VALUES (?, ?, ?, ?, ?)",
    "set_password": "UPDATE auth_users SET password_hash = ? WHERE id = ?",
    "drop_sessions": "DELETE FROM ui_sessions WHERE user_id = ?",
    "drop_expired_sessions": "DELETE FROM ui_sessions WHERE user_id = ? AND expires_at <= ?",
    "new_session": (
        "INSERT INTO ui_sessions (session_hash, user_id, method, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"
    ),
    "session": (
        "SELECT s.session_hash, s.user_id, s.method, s.created_at, s.expires_at, u.name, u.is_admin, u.disabled, "
        "u.created_at AS user_created_at FROM ui_sessions s JOIN auth_users u ON u.id = s.user_id "
        "WHERE s.session_hash = ?"
    ),
    "end_session": "DELETE FROM ui_sessions WHERE session_hash = ?",
    "drop_stale_logins": "DELETE FROM ui_login_attempts WHERE user_name = ? AND at < ?",
    "new_login": "INSERT INTO ui_login_attempts (at, user_name, address, ok) VALUES (?, ?, ?, ?)",
    "last_ok": "SELECT MAX(at) AS at FROM ui_login_attempts WHERE user_name = ? AND ok = ?",
    # the limit-th newest failure: once it leaves the window, fewer than `limit` remain
    "nth_user_failure": (
        "SELECT at FROM ui_login_attempts WHERE user_name = ? AND at > ? AND ok = ? ORDER BY at DESC LIMIT 1 OFFSET ?"
    ),
    "nth_address_failure": (
        "SELECT at FROM ui_login_attempts WHERE address = ? AND at > ? AND ok = ? ORDER BY at DESC LIMIT 1 OFFSET ?"
    ),
}


def _user(row: Any) -> User:
    return User(int(row.id), row.name, bool(row.is_admin), bool(row.disabled), int(row.created_at))


class _AuthRow(NamedTuple):
    """One token with its user, as :meth:`AuthStore.authenticate` reads it."""

    id: str
    user_id: int
    name: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    user_name: str
    is_admin: bool
    disabled: bool
    user_created_at: int


def _token(row: Any, user: str) -> TokenInfo:
    return TokenInfo(row.id, user, row.name, int(row.created_at), row.expires_at, row.revoked_at)


class AuthStore:
    """Users, tokens, grants and the audit log over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._AUTH_SQL = db.sql(
            "SELECT t.id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at,"
            " u.name, u.is_admin, u.disabled, u.created_at"
            " FROM auth_tokens t JOIN auth_users u ON u.id = t.user_id WHERE t.token_hash = ?"
        )
        self._GRANTS_SQL = db.sql("SELECT project, role FROM auth_grants WHERE user_id = ?")

    # -- audit --------------------------------------------------------------------------
    @staticmethod
    def _audit(conn: Any, actor: str, action: str, target: str, **detail: Any) -> None:
        conn.execute(_SQL["audit"], (now_ms(), actor, action, target, json.dumps(detail, sort_keys=True)))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest admin actions, newest first."""
        with self.db.read() as conn:
            rows = conn.execute(_SQL["audit_log"], (limit,)).all()
        return [
            {"at": r.at, "actor": r.actor, "action": r.action, "target": r.target, "detail": json.loads(r.detail)}
            for r in rows
        ]

    # -- users ----------------------------------------------------------------------------
    def create_user(self, name: str, is_admin: bool = False, actor: str = "bootstrap") -> User:
        """Create a user (raises AlreadyExists)."""
        check_name(name, "user name")
        try:
            with self.db.write() as conn:
                conn.execute(_SQL["new_user"], (name, bool(is_admin), now_ms()))
                self._audit(conn, actor, "user.create", name, is_admin=is_admin)
        except SAIntegrityError:
            raise AlreadyExists(f"user {name!r} exists already", "pick another name") from None
        return self.get_user(name)

    def get_user(self, name: str) -> User:
        """A user by name (raises NotFound)."""
        with self.db.read() as conn:
            row = conn.execute(_SQL["user"], (name,)).first()
        if row is None:
            raise NotFound(f"no user {name!r}", "create it: keel server user create NAME")
        return _user(row)

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self.db.read() as conn:
            return [_user(r) for r in conn.execute(_SQL["users"]).all()]

    def set_disabled(self, name: str, disabled: bool, actor: str) -> User:
        """Disable (every token stops working) or re-enable a user."""
        user = self.get_user(name)
        with self.db.write() as conn:
            conn.execute(_SQL["set_disabled"], (bool(disabled), user.id))
            self._audit(conn, actor, "user.disable" if disabled else "user.enable", name)
        return self.get_user(name)

    # -- tokens -----------------------------------------------------------------------------
    def create_token(
        self, user: str, name: str = "", expires_at: int | None = None, actor: str = "bootstrap"
    ) -> tuple[str, TokenInfo]:
        """A new token for ``user``: ``(secret, info)``. The secret is never stored; show it once."""
        owner = self.get_user(user)
        if expires_at is not None and expires_at <= now_ms():
            raise InvalidInput("the token would expire before it is used", "give an expiry in the future")
        import secrets  # with hmac and OpenSSL's hashlib (~10 ms): only where a token is made

        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = secrets.token_hex(8)
        created = now_ms()
        with self.db.write() as conn:
            conn.execute(_SQL["new_token"], (token_id, owner.id, hash_token(secret), str(name), created, expires_at))
            self._audit(conn, actor, "token.create", user, token_id=token_id, name=name, expires_at=expires_at)
        return secret, TokenInfo(token_id, user, str(name), created, expires_at, None)

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Tokens (of one user, or all), newest first, without secrets."""
        with self.db.read() as conn:
            if user is None:
                rows = conn.execute(_SQL["tokens"]).all()
            else:
                rows = conn.execute(_SQL["user_tokens"], (user,)).all()
        return [_token(r, r.user_name) for r in rows]

    def get_token(self, token_id: str) -> TokenInfo:
        """One token's metadata by id (raises NotFound)."""
        with self.db.read() as conn:
            row = conn.execute(_SQL["token"], (token_id,)).first()
        if row is None:
            raise NotFound(f"no token {token_id!r}", "list tokens to find its id")
        return _token(row, row.user_name)

    def revoke_token(self, token_id: str, actor: str) -> TokenInfo:
        """Revoke a token now (idempotent: a revoked token keeps its first revocation time)."""
        info = self.get_token(token_id)
        if info.revoked_at is None:
            with self.db.write() as conn:
                conn.execute(_SQL["revoke_token"], (now_ms(), token_id))
                self._audit(conn, actor, "token.revoke", info.user, token_id=token_id)
        return self.get_token(token_id)

    def authenticate(self, secret: str) -> Principal:
        """The principal a bearer token stands for; raise Unauthenticated if it is not valid now."""
        hint = "pass a valid token: Authorization: Bearer keel_..."
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthenticated("malformed API token", hint)
        # Every request of every process runs this: straight through the driver, one
        # pooled connection, two indexed lookups (the token by hash, the user's grants).
        with self.db.raw_read() as cur:
            cur.execute(self._AUTH_SQL, (hash_token(secret),))
            found = cur.fetchone()
            grants: dict[str, str] = {}
            if found is not None:
                cur.execute(self._GRANTS_SQL, (found[1],))
                grants = {project: role for project, role in cur.fetchall()}
        row = None if found is None else _AuthRow(*found)
        now = now_ms()
        if row is None:
            raise Unauthenticated("unknown API token", hint)
        if row.revoked_at is not None:
            raise Unauthenticated("this API token was revoked", "ask an admin for a new token")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated("this API token has expired", "create a new token")
        if row.disabled:
            raise Unauthenticated(f"user {row.user_name!r} is disabled", "ask an admin to enable the user")
        user = User(int(row.user_id), row.user_name, bool(row.is_admin), False, int(row.user_created_at))
        return Principal(user, _token(row, row.user_name), grants)

    # -- grants -------------------------------------------------------------------------------
    @staticmethod
    def _grants(conn: Any, user_id: int) -> dict[str, str]:
        return {project: role for project, role in conn.execute(_SQL["grants_of"], (user_id,)).all()}

    def grant(self, user: str, project: str, role: str, actor: str) -> None:
        """Give ``user`` ``role`` on ``project`` (or ``*``), replacing any earlier role there."""
        owner = self.get_user(user)
        check_scope(project)
        check_role(role)
        with self.db.write() as conn:
            old = self._grants(conn, owner.id).get(project)
            conn.execute(_SQL["drop_grant"], (owner.id, project))
            conn.execute(_SQL["new_grant"], (owner.id, project, role, actor, now_ms()))
            self._audit(conn, actor, "grant.set", user, project=project, role=role, old=old)

    def revoke_grant(self, user: str, project: str, actor: str) -> None:
        """Remove ``user``'s role on ``project`` (raises NotFound if there is none)."""
        owner = self.get_user(user)
        with self.db.write() as conn:
            if conn.execute(_SQL["drop_grant"], (owner.id, project)).rowcount == 0:
                raise NotFound(f"user {user!r} has no role on {project!r}", "list grants to see who has what")
            self._audit(conn, actor, "grant.revoke", user, project=project)

    def grants(self, user: str | None = None, project: str | None = None) -> list[dict[str, Any]]:
        """Grants, filtered by user and/or project."""
        where = [(c, v) for c, v in (("u.name = ?", user), ("g.project = ?", project)) if v is not None]
        sql = (
            "SELECT u.name AS user_name, g.project, g.role, g.granted_by, g.created_at "
            "FROM auth_grants g JOIN auth_users u ON u.id = g.user_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(c for c, _ in where)
        with self.db.read() as conn:
            rows = conn.execute(sql + " ORDER BY u.name, g.project", tuple(v for _, v in where)).all()
        return [
            {"user": r.user_name, "project": r.project, "role": r.role, "granted_by": r.granted_by, "at": r.created_at}
            for r in rows
        ]

    # -- passwords and browser sessions (the web UI) -------------------------------------------
    def set_password(self, name: str, password: str, actor: str) -> None:
        """Set ``name``'s sign-in password (scrypt, per-user salt); ends the user's browser sessions."""
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise InvalidInput(
                f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters", "choose a longer passphrase"
            )
        user = self.get_user(name)
        stored = hash_password(password)
        with self.db.write() as conn:
            conn.execute(_SQL["set_password"], (stored, user.id))
            conn.execute(_SQL["drop_sessions"], (user.id,))
            self._audit(conn, actor, "user.password", name)

    def check_password(self, name: str, password: str) -> User:
        """The enabled user ``name`` if ``password`` is theirs; else raise Unauthenticated (one message for
        every reason, so a failed sign-in does not reveal which user names exist)."""
        with self.db.read() as conn:
            row = conn.execute(_SQL["user"], (name,)).first()
        ok = verify_password(password, None if row is None else row.password_hash)
        if row is None or not ok or row.disabled:
            raise Unauthenticated("wrong user name or password", "check them, or sign in with an API token")
        return _user(row)

    def create_session(self, user: str, method: str, ttl_s: int) -> str:
        """A new browser session for ``user`` lasting ``ttl_s`` seconds; returns its secret id
        (for the cookie). Only its SHA-256 is stored. Expired sessions of the user are dropped."""
        owner = self.get_user(user)
        import secrets

        secret = secrets.token_urlsafe(32)
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(_SQL["drop_expired_sessions"], (owner.id, now))
            conn.execute(_SQL["new_session"], (hash_token(secret), owner.id, method, now, now + ttl_s * 1000))
        return secret

    def session_principal(self, secret: str) -> Principal:
        """The principal a browser session stands for; raise Unauthenticated if it is unknown,
        expired, or its user is disabled. Its ``token`` describes the session (id ``session``)."""
        with self.db.read() as conn:
            row = conn.execute(_SQL["session"], (hash_token(secret),)).first()
            grants = {} if row is None else self._grants(conn, row.user_id)
        hint = "sign in again"
        if row is None or row.expires_at <= now_ms():
            raise Unauthenticated("your session has ended", hint)
        if row.disabled:
            raise Unauthenticated(f"user {row.name!r} is disabled", "ask an admin to enable the user")
        user = User(int(row.user_id), row.name, bool(row.is_admin), False, int(row.user_created_at))
        token = TokenInfo("session", row.name, f"browser session ({row.method})", row.created_at, row.expires_at, None)
        return Principal(user, token, grants)

    def end_session(self, secret: str) -> None:
        """Sign a browser session out (idempotent)."""
        with self.db.write() as conn:
            conn.execute(_SQL["end_session"], (hash_token(secret),))

    def record_login(self, user_name: str, address: str, ok: bool) -> None:
        """Remember one sign-in attempt (attempts older than a day are dropped)."""
        now = now_ms()
        with self.db.write() as conn:
            conn.execute(_SQL["drop_stale_logins"], (user_name, now - 86_400_000))
            conn.execute(_SQL["new_login"], (now, user_name[:200], address[:100], bool(ok)))

    def login_retry_after(self, user_name: str, address: str, limits: LoginLimits) -> int:
        """0 if a sign-in attempt for ``user_name`` from ``address`` may proceed, else the seconds
        to wait. A successful sign-in clears the user's count (not the address's)."""
        now = now_ms()
        window = limits.window_s * 1000
        with self.db.read() as conn:
            last_ok = conn.execute(_SQL["last_ok"], (user_name, True)).scalar()
            since = max(now - window, int(last_ok or 0))
            waits = []
            for key, who, after, limit in (
                ("nth_user_failure", user_name, since, limits.per_user),
                ("nth_address_failure", address, now - window, limits.per_address),
            ):
                nth = conn.execute(_SQL[key], (who, after, False, limit - 1)).scalar()
                if nth is not None:
                    waits.append(int(nth) + window - now)
        return max([0, *((w + 999) // 1000 for w in waits)])
