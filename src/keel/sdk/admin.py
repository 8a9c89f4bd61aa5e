"""Team-server administration: users, API tokens, role grants and the audit log.

These work on the server's database directly, from a host that can reach it
(no server needs to be running): that is how the first site admin is made,
since no user or password ships with keel. ``keel server admin|user|token|
grant|revoke|grants|audit`` are this module on the command line::

    from keel.sdk.admin import ServerAdmin

    with ServerAdmin("postgresql+psycopg://keel@db/keel") as admin:
        secret, info = admin.create_admin("alice")      # the secret is shown once, never stored
        admin.grant("bob", "chat-bot", "writer")

Every change is a row of the audit log; its actor is ``server-cli:<OS user>``.
"""

from __future__ import annotations

import getpass
from types import TracebackType
from typing import Any

from keel.core.auth import TokenInfo, User
from keel.core.entities import now_ms
from keel.errors import InvalidInput
from keel.services.auth import AuthStore
from keel.services.workspace import open_store

__all__ = ["ServerAdmin", "TokenInfo", "User", "cli_actor", "gc", "sweep_leftovers"]

_DAY_MS = 86_400_000


def cli_actor() -> str:
    """Who the audit log records for a change made here: ``server-cli:<OS user>`` (``server-cli`` if unknown)."""
    try:
        return f"server-cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in the environment or the password database
        return "server-cli"


class ServerAdmin:
    """Users, tokens and grants of the keel server whose database is ``store`` (a database URL).

    Only the database is opened: the object store is never touched. Close it
    (or use it as a context manager) to release the connections.
    """

    def __init__(self, store: str | None, actor: str | None = None) -> None:
        if not store:
            raise InvalidInput(
                "no server store given", "pass --store URL (the server's database) or set KEEL_SERVER_STORE"
            )
        self._store = open_store(store, "memory://", cached=False)  # user rows only: no object store needed
        self._auth = AuthStore(self._store.db)
        self.actor = actor or cli_actor()

    def close(self) -> None:
        """Release the database connections."""
        self._store.close()

    def __enter__(self) -> ServerAdmin:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- users --------------------------------------------------------------------------------
    def create_admin(self, name: str) -> tuple[str, TokenInfo]:
        """Bootstrap: a site admin ``name`` and a token that never expires: ``(secret, info)``."""
        self._auth.create_user(name, is_admin=True, actor=self.actor)
        return self._auth.create_token(name, "bootstrap", None, self.actor)

    def create_user(self, name: str, is_admin: bool = False) -> User:
        """A new user (raises AlreadyExists)."""
        return self._auth.create_user(name, is_admin=is_admin, actor=self.actor)

    def get_user(self, name: str) -> User:
        """One user by name (raises NotFound)."""
        return self._auth.get_user(name)

    def list_users(self) -> list[User]:
        """Every user, by name."""
        return self._auth.list_users()

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable a user (every token stops working at once) or enable them again."""
        return self._auth.set_disabled(name, disabled, self.actor)

    def set_password(self, name: str, password: str) -> None:
        """Set ``name``'s web UI password; their browser sessions end."""
        self._auth.set_password(name, password, self.actor)

    # -- tokens -------------------------------------------------------------------------------
    def create_token(self, user: str, name: str = "", expires_days: float | None = 90.0) -> tuple[str, TokenInfo]:
        """A new API token for ``user``: ``(secret, info)``. ``expires_days`` None or <= 0: never expires."""
        expires = None if expires_days is None or expires_days <= 0 else now_ms() + int(expires_days * _DAY_MS)
        return self._auth.create_token(user, name, expires, self.actor)

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        """Tokens (of one user, or all), newest first; never their secrets."""
        if user is not None:
            self._auth.get_user(user)  # an unknown user is NotFound, not an empty list
        return self._auth.list_tokens(user)

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token now (revoking it again changes nothing)."""
        return self._auth.revoke_token(token_id, self.actor)

    # -- grants ---------------------------------------------------------------------------------
    def grant(self, user: str, project: str, role: str) -> None:
        """Give ``user`` ``role`` (reader, writer, admin) on ``project``, ``@registries`` or ``*``."""
        self._auth.grant(user, project, role, self.actor)

    def revoke_grant(self, user: str, project: str) -> None:
        """Take ``user``'s role on ``project`` away (raises NotFound if they have none)."""
        self._auth.revoke_grant(user, project, self.actor)

    def grants(self, user: str | None = None, project: str | None = None) -> list[dict[str, Any]]:
        """Grants as ``{user, project, role, granted_by, at}``, filtered by user and/or project."""
        return self._auth.grants(user, project)

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest user, token and grant changes, newest first."""
        if limit < 1:
            raise InvalidInput(f"invalid limit {limit}", "give a limit of 1 or more")
        return self._auth.audit_log(limit)


def sweep_leftovers(
    store: str | None,
    objects: str | None = None,
    *,
    tmp_dir: str | None = None,
    tmp_age: float | None = None,
    upload_age: float | None = None,
) -> Any:
    """Remove what killed server processes left (:mod:`keel.services.leftovers`): spool
    files under ``tmp_dir`` (default: the system's temporary folder) untouched for
    ``tmp_age`` seconds whose process is gone, and the object store's multipart uploads
    started more than ``upload_age`` seconds ago (a local store: its stale temporary
    files). Ages default to ``KEEL_SERVER_SWEEP_TMP_AGE`` / ``KEEL_SERVER_SWEEP_UPLOAD_AGE``,
    else 1 hour and 24 hours. Returns a :class:`~keel.services.leftovers.SweepReport`."""
    from keel.services.leftovers import sweep

    if not store:
        raise InvalidInput("no server store given", "pass --store URL (the server's database) or set KEEL_SERVER_STORE")
    opened = open_store(store, objects, cached=False)
    try:
        return sweep(opened.objects, tmp_dir, spool_age=tmp_age, upload_age=upload_age)
    finally:
        opened.close()


def prune_traces(store: str | None, objects: str | None, older_than: str) -> dict[str, int]:
    """Apply trace retention on a server's store (:meth:`keel.services.traces.TraceService.prune`):
    spans older than ``older_than`` (``30d``, a date) go; PostgreSQL drops whole months."""
    from keel.services.traces import TraceService

    if not store:
        raise InvalidInput("no server store given", "pass --store URL (the server's database) or set KEEL_SERVER_STORE")
    opened = open_store(store, objects, cached=False)
    try:
        return TraceService(opened).prune(older_than)
    finally:
        opened.close()


def gc(
    store: str | None = None,
    objects: str | None = None,
    *,
    grace: str | float = "1h",
    dry_run: bool = False,
    retention: bool = True,
    progress: Any = None,
) -> Any:
    """Apply the store's retention policies (``retention=False``: skip them), then remove the
    objects nothing references from a store (``keel gc``; see docs/gc.md): the
    current workspace's (or ``KEEL_URI``'s), or the database URL ``store`` with its object
    store ``objects`` (a team server's: gc runs next to its store, not through the server).
    Objects younger than ``grace`` (``1h``, ``30m``, seconds) are kept. With ``dry_run``
    nothing is removed. Returns a :class:`~keel.services.gc.GcReport`."""
    import os

    from keel.services.gc import collect, parse_grace

    grace_s = parse_grace(grace)
    server = os.environ.get("KEEL_URI", "")
    if store is None and server.lower().startswith(("http://", "https://")):
        raise InvalidInput(
            f"keel gc cannot collect the objects of the keel server {server} through it",
            "run it where the server's store is reachable: keel gc --store DATABASE_URL --objects OBJECTS_URL"
            " (unset KEEL_URI to collect this workspace's store instead)",
        )
    opened = open_store(store, objects, cached=False)
    try:
        # The retention policies first (keel server applies them on a schedule; locally gc does),
        # so what they expire and what it orphans goes in this same pass.
        from keel.services.retention import apply_retention

        expired = apply_retention(opened, dry_run=dry_run) if retention else []
        report = collect(opened, grace_s=grace_s, dry_run=dry_run, progress=progress)
        report.expired = [r for r in expired if r.matched]
        return report
    finally:
        opened.close()
