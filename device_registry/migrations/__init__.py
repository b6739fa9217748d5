"""Alembic migrations of the registry schema, run by ``database.migrate``."""
