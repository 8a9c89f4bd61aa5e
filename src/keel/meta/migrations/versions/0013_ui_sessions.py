"""Web UI: password sign-in, browser sessions, and login attempts for rate limiting.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("auth_users", sa.Column("password_hash", sa.String(200)))
    op.create_table(
        "ui_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", _Id, sa.ForeignKey("auth_users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ui_sessions_user", "ui_sessions", ["user_id"])
    op.create_table(
        "ui_login_attempts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("user_name", sa.String(200), nullable=False),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
    )
    op.create_index("ix_ui_login_attempts_user", "ui_login_attempts", ["user_name", "at"])
    op.create_index("ix_ui_login_attempts_address", "ui_login_attempts", ["address", "at"])


def downgrade() -> None:
    op.drop_table("ui_login_attempts")
    op.drop_table("ui_sessions")
    with op.batch_alter_table("auth_users") as batch:
        batch.drop_column("password_hash")
