"""The hub's read interface over the database: cheap refresh, new devices seen within 5 s."""

from __future__ import annotations

import threading
import time

from device_registry.database import RegistryDatabase, open_database
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import DeviceDirectory
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceUpdate
from tests.registry.conftest import seed_catalog


def test_device_registered_while_hub_runs_is_accepted_within_5_s(
    service: RegistryService, database_url: str
) -> None:
    seed_catalog(service)
    service.create_device(
        DeviceCreate(id="gw-1", device_type="agent", state="active"),
        actor="t",
        issue_credentials=False,
    )
    hub_side: RegistryDatabase = open_database(database_url)  # the hub's own connection
    try:
        directory = DatabaseDeviceDirectory(hub_side)
        assert isinstance(directory, DeviceDirectory)
        assert directory.get("cam-9") is None
        assert directory.refresh() is False  # nothing changed: cheap, no reload
        generation = directory.generation

        def register() -> None:
            time.sleep(0.3)
            service.create_device(
                DeviceCreate(
                    id="cam-9",
                    device_type="cctv-dome",
                    state="active",
                    gateway_id="gw-1",
                    site_id="bkt-01",
                    kota="Semarang",
                    kecamatan="Genuk",
                    model="DS-2CD",
                    team_id="dpu-drainage",
                    tags={"zone": "east"},
                ),
                actor="t",
            )

        writer = threading.Thread(target=register)
        writer.start()
        deadline = time.monotonic() + 5.0
        record = None
        while time.monotonic() < deadline and record is None:
            directory.refresh()  # the hub calls this about once a second
            record = directory.get("cam-9")
            time.sleep(0.2)
        writer.join()
        assert record is not None, "new device not seen within 5 s"
        assert directory.generation > generation
        assert record.expected_interval_s == 60
        assert record.protocol == "onvif"
        assert record.influx_tags() == {
            "device_id": "cam-9",
            "family": "cctv",
            "site": "bkt-01",
            "kecamatan": "Genuk",
            "team": "dpu-drainage",
            "model": "DS-2CD",
        }
        assert record.tags["zone"] == "east"
        assert [r.device_id for r in directory.devices_for_gateway("gw-1")] == ["cam-9"]
        service.update_device("cam-9", DeviceUpdate(state="maintenance"), actor="t")
        assert directory.refresh() is True
        record = directory.get("cam-9")
        assert record is not None
        assert record.state == "maintenance"
        assert record.accepts_data
        service.retire_device("cam-9", actor="t")
        directory.refresh()
        record = directory.get("cam-9")
        assert record is not None
        assert not record.accepts_data
    finally:
        hub_side.close()
