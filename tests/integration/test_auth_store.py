"""The auth rows (users, tokens, grants, audit log, sign-in attempts) on both databases.

Every query of :class:`keel.meta.auth.AuthStore` is SQL text run on the driver: these check
what each returns (types, order, filters) on a SQLite file and on PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.core.auth import LoginLimits
from keel.core.entities import now_ms
from keel.errors import AlreadyExists, NotFound, Unauthenticated
from keel.meta import Database, open_database
from keel.meta.auth import AuthStore


@pytest.fixture
def auth(migrated_database_url: str) -> Iterator[AuthStore]:
    db: Database = open_database(migrated_database_url)
    try:
        yield AuthStore(db)
    finally:
        db.close()


def test_users_tokens_grants_and_the_audit_log(auth: AuthStore) -> None:
    admin = auth.create_user("root", is_admin=True)
    ann = auth.create_user("ann")
    assert (admin.is_admin, admin.disabled, ann.is_admin) == (True, False, False)
    assert all(type(v) is bool for u in auth.list_users() for v in (u.is_admin, u.disabled))
    assert [u.name for u in auth.list_users()] == ["ann", "root"]
    with pytest.raises(AlreadyExists):
        auth.create_user("ann")

    secret, first = auth.create_token("ann", "laptop", actor="root")
    _, second = auth.create_token("ann", "ci", expires_at=now_ms() + 60_000, actor="root")
    auth.create_token("root", "ops", actor="root")
    assert {t.name for t in auth.list_tokens("ann")} == {"laptop", "ci"}
    assert len(auth.list_tokens()) == 3
    assert [t.created_at for t in auth.list_tokens()] == sorted(
        (t.created_at for t in auth.list_tokens()), reverse=True
    )
    assert auth.get_token(second.id).expires_at == second.expires_at
    with pytest.raises(NotFound):
        auth.get_token("nope")

    auth.grant("ann", "beta", "reader", "root")
    auth.grant("ann", "alpha", "writer", "root")
    auth.grant("root", "alpha", "admin", "root")
    auth.grant("ann", "beta", "writer", "root")  # replaces the earlier role
    assert [(g["user"], g["project"], g["role"]) for g in auth.grants()] == [
        ("ann", "alpha", "writer"),
        ("ann", "beta", "writer"),
        ("root", "alpha", "admin"),
    ]
    assert [g["project"] for g in auth.grants(user="ann")] == ["alpha", "beta"]
    assert [g["user"] for g in auth.grants(project="alpha")] == ["ann", "root"]
    assert [g["role"] for g in auth.grants(user="ann", project="beta")] == ["writer"]
    principal = auth.authenticate(secret)
    assert (principal.name, principal.grants) == ("ann", {"alpha": "writer", "beta": "writer"})
    auth.revoke_grant("ann", "alpha", "root")
    with pytest.raises(NotFound):
        auth.revoke_grant("ann", "alpha", "root")

    revoked = auth.revoke_token(first.id, "root")
    assert revoked.revoked_at is not None
    assert auth.revoke_token(first.id, "root").revoked_at == revoked.revoked_at  # the first revocation stays
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.authenticate(secret)
    assert auth.set_disabled("ann", True, "root").disabled is True
    assert auth.set_disabled("ann", False, "root").disabled is False

    log = auth.audit_log()
    assert log[0] == {"at": log[0]["at"], "actor": "root", "action": "user.enable", "target": "ann", "detail": {}}
    assert [e["action"] for e in auth.audit_log(limit=2)] == ["user.enable", "user.disable"]
    assert log[-1]["action"] == "user.create" and log[-1]["detail"] == {"is_admin": True}


def test_passwords_and_sign_in_limits(auth: AuthStore) -> None:
    auth.create_user("bob")
    auth.set_password("bob", "a long passphrase", "test")
    assert auth.check_password("bob", "a long passphrase").name == "bob"
    with pytest.raises(Unauthenticated):
        auth.check_password("bob", "wrong passphrase")
    limits = LoginLimits(per_user=2, per_address=3, window_s=60)
    auth.record_login("bob", "10.0.0.1", False)
    assert auth.login_retry_after("bob", "10.0.0.9", limits) == 0  # one failure: under the limit
    auth.record_login("bob", "10.0.0.2", False)
    assert 0 < auth.login_retry_after("bob", "10.0.0.9", limits) <= 60
    auth.record_login("bob", "10.0.0.3", True)  # a success clears the user's count...
    assert auth.login_retry_after("bob", "10.0.0.9", limits) == 0
    auth.record_login("eve", "10.0.0.9", False)
    auth.record_login("mal", "10.0.0.9", False)
    auth.record_login("ned", "10.0.0.9", False)  # ...not the address's
    assert 0 < auth.login_retry_after("bob", "10.0.0.9", limits) <= 60
