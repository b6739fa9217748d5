"""A simulated vehicle's readings are accepted by the real hub under its own identity."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_registry.database import RegistryDatabase, open_database
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from drivers.gps.simulator import GpsSimulator
from drivers.simulation import FaultBoard, SimClock, SimulatorContext
from hub.demo.fleet import register_fleet
from hub.ingest.ingest_service import IngestService
from hub.settings import Settings
from tests.conftest import RunningStack
from tests.demo.helpers import tugu_fleet


@pytest.fixture
def database(tmp_path: Path) -> Iterator[RegistryDatabase]:
    db = open_database(f"sqlite:///{tmp_path}/registry.sqlite3")
    try:
        yield db
    finally:
        db.close()


async def test_hub_writes_a_simulated_bus_that_published_as_itself(
    running_stack: RunningStack,
    test_settings: Settings,
    influx_db: str,
    database: RegistryDatabase,
    tmp_path: Path,
    unique_id: str,
) -> None:
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    service = RegistryService(database, DynsecIdentities(client))
    service.seed_types(actor="test")
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(tugu_fleet(unique_id)), encoding="utf-8")
    fleet = await asyncio.to_thread(register_fleet, service, fleet_file=path, state_dir=tmp_path)
    client.close()
    bus = next(d for d in fleet.devices if d.family == "gps")
    hub = IngestService(
        test_settings, running_stack.mqtt_password, directory=DatabaseDeviceDirectory(database)
    )
    await asyncio.to_thread(hub.start)
    simulator = GpsSimulator()
    ctx = SimulatorContext(
        clock=SimClock(60),
        faults=FaultBoard(),
        mqtt_host=running_stack.mqtt_host,
        mqtt_port=running_stack.mqtt_port,
        state_dir=tmp_path,
    )
    task = asyncio.create_task(simulator.run([bus], ctx))
    query = f"SELECT lat, lon, speed_kmh FROM gps WHERE device_id = '{bus.device_id}'"
    rows: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rows) < 2:
            await asyncio.sleep(0.5)
            rows = running_stack.influx.rows(query, database=influx_db)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(hub.stop)
    assert len(rows) >= 2
    assert all(-7.2 < float(str(r["lat"])) < -6.85 for r in rows)
    assert hub.stats.messages_in >= 2
    # Each point the hub wrote was one the simulator produced.
    assert simulator.stats.by_device()[bus.device_id] >= len(rows)
