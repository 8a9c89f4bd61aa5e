"""Events and webhooks (see keel.meta.events, keel.meta.hooks and keel.services.hooks):

- ``events``: the outbox. A request that changes something (a new version, an alias move, a
  review step, an evaluation finished, a regression, a flag killed) inserts one row inside its
  own write transaction, and nothing else; ``dispatched`` turns 1 once the server's worker has
  fanned it out to the matching subscriptions (as ``hook_deliveries`` rows, in one transaction);
- ``hook_subscriptions``: a webhook: the project it listens to (NULL: every project), the event
  kinds (a JSON list of patterns, ``version.*``), an optional registry (kind) and name, the
  target URL and the secret deliveries are signed with;
- ``hook_deliveries``: one event for one subscription: its state (pending, delivered, failed),
  attempts so far, when it is due next, and the lease a worker holds while it sends it;
- ``hook_attempts``: every attempt: when, the status code or the error, how long it took.

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("project", sa.String(200)),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("data", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("dispatched", sa.Integer, nullable=False, server_default="0"),
        sa.Index("ix_events_pending", "dispatched", "id"),
        sa.Index("ix_events_project", "project", "id"),
    )
    op.create_table(
        "hook_subscriptions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(200)),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("subject_kind", sa.String(32)),
        sa.Column("subject_name", sa.String(500)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("active", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Index("ix_hook_subscriptions_project", "project"),
    )
    op.create_table(
        "hook_deliveries",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", _Id, sa.ForeignKey("hook_subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", _Id, sa.ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.BigInteger, nullable=False),
        sa.Column("lease_until", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("leased_by", sa.String(64)),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
        sa.UniqueConstraint("subscription_id", "event_id", name="uq_hook_deliveries_subscription_event"),
        sa.Index("ix_hook_deliveries_due", "status", "next_at"),
        sa.Index("ix_hook_deliveries_subscription", "subscription_id", "id"),
    )
    op.create_table(
        "hook_attempts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", _Id, sa.ForeignKey("hook_deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("response", sa.Text),
        sa.Column("worker", sa.String(64), nullable=False, server_default=""),
        sa.Index("ix_hook_attempts_delivery", "delivery_id", "attempt"),
    )


def downgrade() -> None:
    op.drop_table("hook_attempts")
    op.drop_table("hook_deliveries")
    op.drop_table("hook_subscriptions")
    op.drop_table("events")
