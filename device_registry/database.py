"""Opening the registry database: engine, migrations at start-up, sessions.

SQLite (the default, one file in the state folder) gets WAL journaling and foreign keys;
PostgreSQL is reached through psycopg 3 (``postgresql+psycopg://``). ``open_database``
runs ``alembic upgrade head`` before handing out sessions, so a new install and an
upgraded one start from the same schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from device_registry.errors import RegistryError
from device_registry.models import RegistryRevision

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class DatabaseError(RegistryError):
    """The registry database cannot be opened or migrated."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets the API read while a bulk
    # import writes; NORMAL sync is durable across a crash of the process, which is the
    # failure that matters for a registry on the hub's own disk.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLite or PostgreSQL URL, with the settings the registry relies on."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DatabaseError(f"registry.database_url: not a database URL: {err}") from err
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url, pool_pre_ping=True, connect_args={"connect_timeout": 10}, pool_size=10
        )
    raise DatabaseError(
        f"registry.database_url: unsupported backend {parsed.get_backend_name()!r}; "
        "use sqlite:/// or postgresql+psycopg://"
    )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (``alembic upgrade head``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            # The change counter row exists from the first migration on.
            if connection.execute(select(RegistryRevision.id)).first() is None:
                connection.execute(insert(RegistryRevision).values(id=1, counter=0))
    except OperationalError as err:
        raise DatabaseError(f"cannot migrate registry database: {err.orig}") from err


@dataclass(frozen=True, slots=True)
class RegistryDatabase:
    """An engine plus its session factory."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk import changed many rows).

        Without them SQLite picks the low-selectivity state index for a filtered list and
        the query is several times slower.
        """
        statement = "ANALYZE" if self.engine.dialect.name == "sqlite" else "ANALYZE devices"
        with self.engine.begin() as connection:
            connection.exec_driver_sql(statement)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()


def open_database(url: str, *, run_migrations: bool = True) -> RegistryDatabase:
    """Open (and by default migrate) the registry database at ``url``."""
    engine = make_engine(url)
    if run_migrations:
        migrate(engine)
    return RegistryDatabase(engine, sessionmaker(engine, expire_on_commit=False))
