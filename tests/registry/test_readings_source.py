"""create_app(readings_source=...): the status endpoint serves the source's last readings.

The source here is what the hub plugs in: a reader of the real InfluxDB (the session's
stack), asking for the last value of every field of the device's measurement.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from device_registry.api_tokens import create_token
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceStatusUpdate
from device_registry.web_api import TimedReadings, create_app
from hub.influxql import InfluxQL
from tests.conftest import RunningStack, free_port
from tests.registry.conftest import seed_catalog


def write_lines(stack: RunningStack, database: str, lines: list[str]) -> None:
    """Line protocol (ms precision) into the real InfluxDB."""
    response = httpx.post(
        f"{stack.settings.influx.url}/write",
        params={"db": database, "precision": "ms"},
        content="\n".join(lines).encode(),
        timeout=10,
    )
    assert response.status_code == 204, response.text


def influx_readings(
    stack: RunningStack, database: str, calls: list[str]
) -> Callable[[str], dict[str, Any] | None]:
    """A readings source: last value of each field of the device's flood series."""

    def source(device_id: str) -> dict[str, Any] | None:
        calls.append(device_id)
        rows = stack.influx.rows(
            f"SELECT last(*) FROM flood WHERE device_id = '{device_id}'", database=database
        )
        if not rows:
            return None
        return {
            key.removeprefix("last_"): value
            for key, value in rows[0].items()
            if key != "time" and value is not None
        }

    return source


def test_status_serves_the_sources_last_readings(
    service: RegistryService, running_stack: RunningStack, influx_db: str
) -> None:
    seed_catalog(service)
    for device_id in ("g-live", "g-quiet"):
        service.create_device(
            DeviceCreate(id=device_id, device_type="flood-gauge", state="active"), actor="t"
        )
    now_ms = int(time.time() * 1000)
    write_lines(
        running_stack,
        influx_db,
        [
            f"flood,device_id=g-live,family=flood level_m=1.25,rain_mm=0.4 {now_ms - 60_000}",
            f"flood,device_id=g-live,family=flood level_m=1.4 {now_ms - 1_000}",
            f"flood,device_id=other,family=flood level_m=9.9 {now_ms}",
        ],
    )
    # The hub's pushed status: online flags, and readings the source will override.
    service.set_status(
        [
            DeviceStatusUpdate(device_id="g-live", online=True, last_readings={"level_m": 0.1}),
            DeviceStatusUpdate(
                device_id="g-quiet", online=False, reason="silent", last_readings={"level_m": 0.7}
            ),
        ]
    )
    calls: list[str] = []
    token = create_token(service.database, name="viewer", role="viewer", actor="t").token
    app = create_app(service, readings_source=influx_readings(running_stack, influx_db, calls))
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        live = client.get("/api/v1/devices/g-live/status")
        assert live.status_code == 200, live.text
        body = live.json()
        # Last value per field: level_m from the newer point, rain_mm from the older one.
        assert body["last_readings"] == {"level_m": 1.4, "rain_mm": 0.4}
        assert body["online"] is True
        assert body["expected_interval_s"] == 300
        assert body["readings_source_error"] is None

        # No data in InfluxDB: the source says None and the pushed readings stand.
        quiet = client.get("/api/v1/devices/g-quiet/status").json()
        assert quiet["last_readings"] == {"level_m": 0.7}
        assert (quiet["online"], quiet["reason"]) == (False, "silent")

        # An unknown device is a 404 before the source is asked.
        ghost = client.get("/api/v1/devices/ghost/status")
        assert ghost.status_code == 404
        assert ghost.json()["field"] == "id"
        assert calls == ["g-live", "g-quiet"]

        # Without a token the source is not reached either.
        assert (
            client.get("/api/v1/devices/g-live/status", headers={"Authorization": ""}).status_code
            == 401
        )
        assert calls == ["g-live", "g-quiet"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_a_source_the_pushed_readings_are_served(service: RegistryService) -> None:
    seed_catalog(service)
    service.create_device(DeviceCreate(id="g-1", device_type="flood-gauge"), actor="t")
    service.set_status([DeviceStatusUpdate(device_id="g-1", online=True, last_readings={"x": 1})])
    token = create_token(service.database, name="v", role="viewer", actor="t").token
    with TestClient(create_app(service)) as client:
        body = client.get(
            "/api/v1/devices/g-1/status", headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert body["last_readings"] == {"x": 1}


def test_a_failing_source_falls_back_to_the_pushed_readings(
    service: RegistryService, caplog: pytest.LogCaptureFixture
) -> None:
    seed_catalog(service)
    service.create_device(DeviceCreate(id="g-down", device_type="flood-gauge"), actor="t")
    service.set_status(
        [DeviceStatusUpdate(device_id="g-down", online=True, last_readings={"level_m": 0.9})]
    )
    # A real InfluxDB client aimed at a port where nothing listens: "InfluxDB is down".
    down = InfluxQL(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    calls: list[str] = []

    def source(device_id: str) -> dict[str, Any] | None:
        calls.append(device_id)
        rows = down.rows(f"SELECT last(*) FROM flood WHERE device_id = '{device_id}'")
        return rows[0] if rows else None

    token = create_token(service.database, name="viewer", role="viewer", actor="t").token
    with TestClient(create_app(service, readings_source=source)) as client:
        response = client.get(
            "/api/v1/devices/g-down/status", headers={"Authorization": f"Bearer {token}"}
        )
    assert calls == ["g-down"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["last_readings"] == {"level_m": 0.9}
    assert body["online"] is True
    assert body["readings_source_error"].startswith("InfluxQueryError: http://127.0.0.1:")
    assert any("readings source failed for g-down" in r.getMessage() for r in caplog.records), (
        caplog.text
    )


def test_a_source_with_times_gives_each_metrics_time(service: RegistryService) -> None:
    seed_catalog(service)
    for device_id in ("g-t", "g-none"):
        service.create_device(DeviceCreate(id=device_id, device_type="flood-gauge"), actor="t")
    service.set_status(
        [DeviceStatusUpdate(device_id="g-none", online=True, last_readings={"level_m": 0.9})]
    )
    at = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)
    answers = {
        "g-t": TimedReadings(values={"level_m": 1.5, "rain_mm": 2}, times={"level_m": at}),
        # An empty answer keeps what the hub pushed, which has no times.
        "g-none": TimedReadings(values={}, times={}),
    }
    token = create_token(service.database, name="v", role="viewer", actor="t").token
    with TestClient(create_app(service, readings_source=answers.get)) as client:
        headers = {"Authorization": f"Bearer {token}"}
        timed = client.get("/api/v1/devices/g-t/status", headers=headers).json()
        pushed = client.get("/api/v1/devices/g-none/status", headers=headers).json()
    assert timed["last_readings"] == {"level_m": 1.5, "rain_mm": 2}
    assert {k: dt.datetime.fromisoformat(v) for k, v in timed["last_readings_at"].items()} == {
        "level_m": at
    }
    assert pushed["last_readings"] == {"level_m": 0.9}
    assert pushed["last_readings_at"] == {}
