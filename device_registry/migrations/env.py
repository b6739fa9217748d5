"""Alembic environment: migrations run on a connection handed in by ``database.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from device_registry.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through device_registry.database.migrate")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
