"""What a registry command runs in: the settings loader, the service, and its errors as exits.

The hub's CLI installs a loader that turns ``--config`` into a ``RegistryRuntime``
(database URL, broker admin login); the registry never imports the hub. Writes are
audited as ``cli:<login>``. Exit codes: 2 for invalid input (the option or field is
named), 1 when the registry refuses (unknown id, conflict, broker or database trouble).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import typer
from pydantic import ValidationError
from rich.markup import escape

from device_registry.cli_options import field_location
from device_registry.cli_output import err
from device_registry.errors import FieldError, RegistryError

if TYPE_CHECKING:
    # SQLAlchemy and Alembic are imported when a registry command runs, not when the
    # `kotahub` command starts (every other subcommand would pay ~0.4 s for them).
    from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient
    from device_registry.registry_service import RegistryService
    from device_registry.technician_page import TileSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryRuntime:
    """What the registry commands need from the settings."""

    database_url: str
    broker: BrokerAdmin | None
    dynsec_batch: int = 50
    api_host: str = "127.0.0.1"
    api_port: int = 18090
    # The technician page's map ([registry] map_tile_url); None: the environment, or none.
    tiles: TileSettings | None = None
    # The API's request limits ([registry] max_body_bytes, ...), as create_app's defaults.
    max_body_bytes: int = 1048576
    max_import_bytes: int = 10485760
    max_import_rows: int = 20000


class RuntimeLoader(Protocol):
    """Turns ``--config`` into a RegistryRuntime; read-only commands need no broker login."""

    def __call__(self, config: Path | None, *, with_broker: bool = True) -> RegistryRuntime:
        """Load the settings (exit 2 with the reason when they are invalid)."""
        ...


_loader: list[RuntimeLoader] = []


def set_runtime_loader(loader: RuntimeLoader) -> None:
    """Install how ``--config`` becomes a RegistryRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def installed_loader() -> RuntimeLoader | None:
    """The loader the hub's CLI installed, or None (the registry used on its own)."""
    return _loader[0] if _loader else None


def actor() -> str:
    """Who the audit log names for a CLI write: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return f"cli:uid{os.getuid()}"


def invalid(field: str, message: str) -> typer.Exit:
    """Print 'invalid FIELD: reason' and return the exit (status 2) to raise."""
    err().print(f"[red]invalid[/red] {escape(field_location((field,)))}: {escape(message)}")
    return typer.Exit(2)


def database_error_line(error: Exception, database_url: str, waited_s: float) -> str:
    """One line for a failed registry operation: the driver's message, never the SQL.

    SQLAlchemy's own text adds the statement and its parameters (a device's whole row)
    on lines of their own; an operator needs the cause and what to do.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, OperationalError

    orig = error.orig if isinstance(error, DBAPIError) else None
    message = str(orig) if orig is not None else str(error).split("\n", 1)[0]
    if isinstance(error, OperationalError) and "database is locked" in message:
        path = make_url(database_url).database or database_url
        return (
            f"the registry database {path} is locked by another process"
            f" (waited {waited_s:.0f} s): try again when it is free"
        )
    return " ".join(message.split()) or type(error).__name__


@contextmanager
def open_service(config: Path | None, *, broker: bool = True) -> Iterator[RegistryService]:
    """The registry service for one command; its errors become a line and an exit code."""
    from device_registry.database import open_database
    from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities
    from device_registry.registry_service import RegistryService

    loader = installed_loader()
    if loader is None:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    runtime = loader(config, with_broker=broker)
    dynsec: DynamicSecurityClient | None = None
    database = None
    console = err()
    started = time.monotonic()
    try:
        database = open_database(runtime.database_url)
        if broker and runtime.broker is not None:
            dynsec = DynamicSecurityClient(runtime.broker, batch_size=runtime.dynsec_batch)
        yield RegistryService(database, DynsecIdentities(dynsec) if dynsec else None)
    except ValidationError as error:
        for item in error.errors():
            where = escape(field_location(item["loc"]))
            console.print(f"[red]invalid[/red] {where}: {escape(item['msg'])}")
        raise typer.Exit(2) from error
    except FieldError as error:
        raise invalid(error.field, error.message) from error
    except RegistryError as error:
        console.print(f"[red]error[/red]: {escape(str(error))}")
        raise typer.Exit(1) from error
    except Exception as error:
        from sqlalchemy.exc import SQLAlchemyError

        from device_registry.bulk_import import ImportFileError

        if isinstance(error, ImportFileError):
            console.print(f"[red]invalid file[/red]: {escape(str(error))}")
            raise typer.Exit(2) from error
        if isinstance(error, SQLAlchemyError):
            waited_s = time.monotonic() - started
            line = database_error_line(error, runtime.database_url, waited_s)
            console.print(f"[red]database error[/red]: {escape(line)}")
            raise typer.Exit(1) from error
        raise
    finally:
        if dynsec is not None:
            dynsec.close()
        if database is not None:
            database.close()
