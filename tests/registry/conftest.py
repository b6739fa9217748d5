"""Registry fixtures: a throwaway PostgreSQL from the Debian package, and registry
databases parametrized over SQLite and PostgreSQL.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres``
user (``runuser``) in a temporary folder handed to that user. Each test gets a fresh
database cloned from a migrated template, which is much faster than migrating each time.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from device_registry.database import RegistryDatabase, open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceTypeCreate, MetricSpec, SiteCreate, TeamCreate
from tests.conftest import RunningStack, free_port

TEMPLATE_DB = "registry_template"


def find_pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin folder, or a clear failure."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for candidate in reversed(candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    pytest.fail(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
        "install the Debian package 'postgresql' (apt-get install postgresql)"
    )


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL server."""

    port: int
    user: str

    def url(self, database: str) -> str:
        """SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the maintenance database."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start PostgreSQL in a temporary folder on a free port; stop and remove it afterwards."""
    bindir = find_pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="kotahub-pg-"))
    data = root / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    user = "kotahub"
    port = free_port()
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            user,
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-l", str(root / "server.log"), "-o", options, "-w", "-t", "60", "start"],
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        server = PostgresServer(port=port, user=user)
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        template = open_database(server.url(TEMPLATE_DB))
        template.close()
        yield server
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty registry database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{secrets.token_hex(6)}"
    with server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield server.url(name)
    finally:
        with server.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def registry_db(database_url: str) -> Iterator[RegistryDatabase]:
    """An open, migrated registry database."""
    database = open_database(database_url)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def service(registry_db: RegistryDatabase) -> RegistryService:
    """A registry service without a broker (no MQTT identities)."""
    return RegistryService(registry_db)


@pytest.fixture
def identities(running_stack: RunningStack) -> Iterator[DynsecIdentities]:
    """MQTT identities on the session's real Mosquitto."""
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    try:
        yield DynsecIdentities(client)
    finally:
        client.close()


@pytest.fixture
def broker_service(registry_db: RegistryDatabase, identities: DynsecIdentities) -> RegistryService:
    """A registry service that creates identities on the real broker."""
    return RegistryService(registry_db, identities)


def seed_catalog(service: RegistryService) -> None:
    """Device types, a site and a team that most tests use."""
    actor = "test"
    service.create_type(
        DeviceTypeCreate(
            name="cctv-dome",
            family="cctv",
            protocol="onvif",
            expected_interval_s=60,
            metrics=[MetricSpec(name="stream_ok", unit="", kind="boolean")],
        ),
        actor=actor,
    )
    service.create_type(
        DeviceTypeCreate(
            name="nvr-4ch",
            family="cctv",
            protocol="onvif",
            expected_interval_s=60,
        ),
        actor=actor,
    )
    service.create_type(
        DeviceTypeCreate(
            name="flood-gauge",
            family="flood",
            protocol="mqtt",
            expected_interval_s=300,
            metrics=[MetricSpec(name="level_m", unit="m"), MetricSpec(name="rain_mm", unit="mm")],
        ),
        actor=actor,
    )
    service.create_type(
        DeviceTypeCreate(
            name="agent",
            family="gateway",
            protocol="mqtt",
            expected_interval_s=60,
            is_gateway=True,
        ),
        actor=actor,
    )
    service.create_site(
        SiteCreate(
            id="bkt-01", name="Banjir Kanal Timur pump house", latitude=-6.97, longitude=110.45
        ),
        actor=actor,
    )
    service.create_team(TeamCreate(id="dpu-drainage", name="DPU drainage"), actor=actor)
