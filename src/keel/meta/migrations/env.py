"""Alembic environment: keel passes an open connection in ``config.attributes``."""

from alembic import context

from keel.meta.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
