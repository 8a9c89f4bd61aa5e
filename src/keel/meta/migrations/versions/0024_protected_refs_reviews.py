"""Protected refs and change requests (see keel.meta.protection, keel.meta.reviews and
keel.services.reviews):

- ``protected_refs``: a rule. Moving ``ref`` of ``kind`` ``name`` (``*``: every entry of
  that registry) needs an approved change request with ``approvals`` approvals
  (``self_approval``: may the requester's own approval count), or an admin's break glass;
- ``change_requests``: who asks to move which ref from which target to which, why, the
  evidence (JSON: run ids, an evaluation comparison), the approvals required, and its state
  (open, applied, rejected, stale, forced);
- ``change_reviews``: one reviewer's approve or reject of a request, with a comment.

Revision ID: 0024
Revises: 0023
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "protected_refs",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("approvals", sa.Integer, nullable=False),
        sa.Column("self_approval", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("kind", "name", "ref", name="uq_protected_refs_kind_name_ref"),
    )
    op.create_table(
        "change_requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("from_target", sa.Text),
        sa.Column("to_target", sa.Text, nullable=False),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("evidence", sa.Text, nullable=False, server_default="{}"),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("self_approval", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Index("ix_change_requests_status", "status", "id"),
        sa.Index("ix_change_requests_subject", "kind", "name", "ref"),
    )
    op.create_table(
        "change_reviews",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("request_id", _Id, sa.ForeignKey("change_requests.id", ondelete="CASCADE"), nullable=False),
        sa.Column("reviewer", sa.String(255), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("request_id", "reviewer", name="uq_change_reviews_request_reviewer"),
    )


def downgrade() -> None:
    op.drop_table("change_reviews")
    op.drop_table("change_requests")
    op.drop_table("protected_refs")
