"""`kotahub run` shows each device's last readings from InfluxDB (issue 13, item 2).

Before, the one-machine run built the registry app without a readings source, so the
status endpoint and the page's "Last readings" were empty while InfluxDB held the points.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.registry_service import RegistryService
from device_registry.registry_settings import DATABASE_FILE
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, MetricSpec
from hub.influxql import InfluxQL
from hub.last_readings import InfluxLastReadings, LastReading
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.registry.test_readings_source import write_lines
from tests.test_one_machine import wait_until


def _gauge_type(service: RegistryService) -> None:
    service.create_type(
        DeviceTypeCreate(
            name="radar-gauge",
            family="flood",
            protocol="mqtt",
            expected_interval_s=300,
            metrics=[
                MetricSpec(name="level_m", unit="m"),
                MetricSpec(name="rain_mm", unit="mm"),
                MetricSpec(name="pump_on", unit="", kind="boolean"),
            ],
        ),
        actor="test",
    )


def test_last_readings_per_metric_with_time_and_unit(
    running_stack: RunningStack, influx_db: str, tmp_path: Path
) -> None:
    database = open_database(f"sqlite:///{tmp_path / DATABASE_FILE}")
    service = RegistryService(database)
    _gauge_type(service)
    service.create_device(DeviceCreate(id="g-1", device_type="radar-gauge"), actor="t")
    now_ms = int(time.time() * 1000)
    write_lines(
        running_stack,
        influx_db,
        [
            f"flood,device_id=g-1 level_m=1.25,rain_mm=0.4 {now_ms - 60_000}",
            f"flood,device_id=g-1 level_m=1.4 {now_ms - 1_000}",
            # Another device and a field of another type in the same measurement.
            f"flood,device_id=g-2 level_m=9.9 {now_ms}",
            f"flood,device_id=g-1 other_field=5 {now_ms}",
        ],
    )
    with InfluxQL(running_stack.settings.influx.url) as influx:
        source = InfluxLastReadings(service, influx, database=influx_db)
        found = source.readings("g-1")
        assert found == {
            # Each metric has its own time: rain_mm was last reported a minute earlier.
            "level_m": LastReading(
                value=1.4, time=dt.datetime.fromtimestamp((now_ms - 1_000) / 1000, dt.UTC), unit="m"
            ),
            "rain_mm": LastReading(
                value=0.4,
                time=dt.datetime.fromtimestamp((now_ms - 60_000) / 1000, dt.UTC),
                unit="mm",
            ),
        }
        assert source("g-1") == {"level_m": 1.4, "rain_mm": 0.4}
        # A device without points: None, so the web app keeps what the hub pushed.
        service.create_device(DeviceCreate(id="g-3", device_type="radar-gauge"), actor="t")
        assert source("g-3") is None
    database.close()


def test_run_serves_last_readings_from_influxdb(
    running_stack: RunningStack,
    influx_db: str,
    mqtt_client: MqttClientFactory,
    unique_id: str,
    tmp_path: Path,
) -> None:
    api_port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "kotahub.toml"
    config.write_text(
        f'state_dir = "{state}"\n'
        f"[mqtt]\nport = {running_stack.mqtt_port}\n"
        f'password = "{running_stack.mqtt_password}"\n'
        f'[influx]\nurl = "{running_stack.settings.influx.url}"\n'
        f'database = "{influx_db}"\nretention_policy = "autogen"\n'
        f'[ingest]\nclient_id = "{unique_id}-hub"\nshared_group = ""\nmetrics_port = 0\n'
        f"batch_interval_s = 0.2\n"
        f"[registry]\napi_port = {api_port}\nmqtt_identities = false\n"
    )
    state.mkdir()
    database = open_database(f"sqlite:///{state / DATABASE_FILE}")
    service = RegistryService(database)
    _gauge_type(service)
    device_id = f"{unique_id}-gauge"
    service.create_device(
        DeviceCreate(id=device_id, device_type="radar-gauge", state="active"), actor="test"
    )
    token = create_token(database, name="ops", role="viewer", actor="test").token
    database.close()

    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )

        def api_up() -> bool:
            try:
                return api.get("/api/v1/me").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(api_up, timeout_s=90)
        ts = int(time.time() * 1000)
        client = mqtt_client()
        topic = f"kota/v1/dev/{device_id}/telemetry"
        client.publish(
            topic, json.dumps({"ts": ts - 5000, "metrics": {"level_m": 0.5, "rain_mm": 2.0}})
        )
        client.publish(
            topic, json.dumps({"ts": ts, "metrics": {"level_m": -0.42, "pump_on": True}})
        )

        def readings() -> dict[str, object]:
            body = api.get(f"/api/v1/devices/{device_id}/status").json()
            assert body["readings_source_error"] is None, body
            return dict(body["last_readings"])

        expected = {"level_m": -0.42, "rain_mm": 2.0, "pump_on": True}
        wait_until(lambda: readings() == expected)
        # Each metric's own time (issue 13 item 2): rain_mm was last sent 5 s earlier.
        body = api.get(f"/api/v1/devices/{device_id}/status").json()
        at = {
            name: dt.datetime.fromisoformat(value)
            for name, value in body["last_readings_at"].items()
        }
        assert at == {
            "level_m": dt.datetime.fromtimestamp(ts / 1000, dt.UTC),
            "rain_mm": dt.datetime.fromtimestamp((ts - 5000) / 1000, dt.UTC),
            "pump_on": dt.datetime.fromtimestamp(ts / 1000, dt.UTC),
        }
    finally:
        hub.send_signal(signal.SIGTERM)
        output = hub.communicate(timeout=30)[0]
        print(output)
    assert hub.returncode == 0, output
