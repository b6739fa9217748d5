"""A controller's detectors end to end: seeded types, registry devices, the real agent polling
the simulated NTCIP controller (real SNMP on UDP), real Mosquitto, the hub, real InfluxDB.

The detector type is seeded from the atcs family (measurement ``atcs_detector``, tag key
``detector``); its devices are read by their controller's poll, so the agent starts no poll
for them and does not call them driverless.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from device_registry.database import open_database
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate
from drivers.atcs.simulated_controller import SimulatedController
from drivers.snmp.simulated_agent import SimulatedAgents
from hub.agent.agent import AgentStats, plan_devices, poll_task
from hub.settings import Settings
from tests.agent.conftest import agent_settings, running_agent, wait_until
from tests.conftest import RunningStack
from tests.ingest.conftest import HubFactory

DETECTOR_TYPE = "ntcip_1202_detector"


def registry_with_controller(
    path: Path, gw: str, controller: str, detectors: dict[int, str], address: str
) -> RegistryService:
    """A registry (SQLite) with the seeded types, a gateway, a controller and its detectors."""
    service = RegistryService(open_database(f"sqlite:///{path}"))
    service.seed_types(actor="test")
    service.create_type(
        DeviceTypeCreate(
            name="field_agent",
            family="gateway",
            protocol="mqtt",
            expected_interval_s=60,
            is_gateway=True,
        ),
        actor="test",
    )
    service.create_device(DeviceCreate(id=gw, device_type="field_agent"), actor="test")
    service.create_device(
        DeviceCreate(
            id=controller,
            device_type="ntcip_1202_controller",
            state="active",
            gateway_id=gw,
            protocol_address=address,
            driver_config={
                "detectors": {str(n): d for n, d in detectors.items()},
                "poll_interval_s": 0.3,
                "timeout_s": 5,
            },
        ),
        actor="test",
    )
    for number, device_id in detectors.items():
        service.create_device(
            DeviceCreate(
                id=device_id,
                device_type=DETECTOR_TYPE,
                state="active",
                gateway_id=gw,
                parent_id=controller,
                tags={"detector": str(number)},
            ),
            actor="test",
        )
    return service


def test_the_detector_type_is_seeded_in_its_own_measurement(tmp_path: Path) -> None:
    service = RegistryService(open_database(f"sqlite:///{tmp_path / 'r.sqlite3'}"))
    results = dict(service.seed_types(actor="test"))
    assert results[DETECTOR_TYPE] == "created"
    found = service.get_type(DETECTOR_TYPE)
    assert found.family == "atcs_detector"
    assert list(found.influx_tag_keys or ()) == ["detector"]
    assert {m.name for m in found.metrics} == {
        "volume",
        "volume_overflow",
        "occupancy_pct",
        "fault",
        "alarms",
        "period_s",
    }
    assert dict(service.seed_types(actor="test"))[DETECTOR_TYPE] == "unchanged"
    service.database.close()


def test_a_detector_without_a_parent_is_rejected_with_a_reason(tmp_path: Path) -> None:
    from device_registry.directory import DeviceRecord
    from drivers.framework import discover_families

    orphan = DeviceRecord(
        device_id="det-orphan",
        family="atcs_detector",
        device_type=DETECTOR_TYPE,
        gateway_id="gw",
        expected_interval_s=60,
        protocol="ntcip_1202_detector",
    )
    child = DeviceRecord(
        device_id="det-child",
        family="atcs_detector",
        device_type=DETECTOR_TYPE,
        gateway_id="gw",
        expected_interval_s=60,
        protocol="ntcip_1202_detector",
        parent_id="atcs-1",
    )
    stats = AgentStats()
    assert plan_devices([orphan, child], discover_families(), stats) == {}
    assert stats.rejected == {
        "det-orphan": "a ntcip_1202_detector device is read by its parent's poll; it has none"
    }


async def test_detector_rows_reach_influxdb_with_their_detector_tag(
    agents: SimulatedAgents,
    running_stack: RunningStack,
    test_settings: Settings,
    influx_db: str,
    tmp_path: Path,
    unique_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw, controller = f"gw-{unique_id}", f"atcs-{unique_id}"
    detectors = {1: f"{controller}-det1", 2: f"{controller}-det2"}
    port = await agents.serve(SimulatedController(detectors=4, period_s=1))
    service = registry_with_controller(
        tmp_path / "registry.sqlite3", gw, controller, detectors, f"127.0.0.1:{port}"
    )
    records = DatabaseDeviceDirectory(service.database).devices_for_gateway(gw)
    assert {r.device_id for r in records} == {controller, *detectors.values()}
    hubs = HubFactory(running_stack, test_settings, tmp_path, unique_id)
    hubs.devices(*records)

    def rows(query: str) -> list[dict[str, Any]]:
        return running_stack.influx.rows(query, database=influx_db)

    def detector_rows() -> list[dict[str, Any]]:
        return rows(f"SELECT * FROM atcs_detector WHERE device_id =~ /^{controller}-det/")

    caplog.set_level(logging.INFO)
    try:
        await asyncio.to_thread(hubs.start)
        async with running_agent(agent_settings(test_settings), gw, records) as agent:
            await wait_until(lambda: {r["detector"] for r in detector_rows()} == {"1", "2"}, 20)
            await wait_until(
                lambda: bool(rows(f"SELECT * FROM atcs WHERE device_id = '{controller}'")), 20
            )
            # One poll for the controller; its detectors have none and are not rejected.
            names = set(agent.supervisor.names())
            assert poll_task(controller) in names
            assert not {poll_task(d) for d in detectors.values()} & names
            assert agent.stats.rejected == {}
    finally:
        await asyncio.to_thread(hubs.stop_all)
        service.database.close()
    for row in detector_rows():
        assert row["device_id"] == detectors[int(row["detector"])]
        assert row["family"] == "atcs_detector"
        assert row["fault"] == "ok"
        assert 0 <= row["occupancy_pct"] <= 100
        assert row["volume"] >= 0
    assert not [r for r in caplog.records if "no driver" in r.getMessage()]
