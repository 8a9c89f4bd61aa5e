"""Knowledge bases: configuration, immutable versions, the staging area, stored embeddings.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "knowledge_bases",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("dimension", sa.Integer),
        sa.Column("splitter", sa.String(32), nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("chunk_overlap", sa.Integer, nullable=False),
        sa.Column("metadata_fields", sa.Text, nullable=False, server_default="[]"),
        sa.Column("max_document_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "kb_versions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kb_id", _Id, sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("parent", sa.Integer),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("author", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("document_count", sa.BigInteger, nullable=False),
        sa.Column("chunk_count", sa.BigInteger, nullable=False),
        sa.Column("embedding_model", sa.String(200), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("splitter", sa.String(32), nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("chunk_overlap", sa.Integer, nullable=False),
        sa.Column("manifest_oid", sa.String(64), nullable=False),
        sa.Column("chunks_oid", sa.String(64), nullable=False),
        sa.Column("index_oid", sa.String(64), nullable=False),
        sa.Column("data_sources", sa.Text, nullable=False, server_default="[]"),
        sa.Column("embedded_chunks", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reused_chunks", sa.BigInteger, nullable=False, server_default="0"),
        sa.UniqueConstraint("kb_id", "version", name="uq_kb_versions_version"),
    )
    op.create_index("ix_kb_versions_manifest", "kb_versions", ["manifest_oid"])
    op.create_table(
        "kb_staged",
        sa.Column("kb_id", _Id, sa.ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("doc_key", sa.String(1000), primary_key=True),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("document_oid", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "kb_embeddings",
        sa.Column("embedder", sa.String(200), primary_key=True),
        sa.Column("chunk_id", sa.String(64), primary_key=True),
        sa.Column("pack_oid", sa.String(64), nullable=False),
        sa.Column("pack_row", sa.Integer, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    for table in ("kb_embeddings", "kb_staged", "kb_versions", "knowledge_bases"):
        op.drop_table(table)
