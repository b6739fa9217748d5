"""`kotahub run`: ingest, registry API and status feedback in one process, as a user runs it."""

from __future__ import annotations

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
from tests.conftest import MqttClientFactory, RunningStack, free_port


def wait_until(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_run_ingests_registered_device_and_reports_status(
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
    # A technician registered a flood gauge before the hub started.
    state.mkdir()
    database = open_database(f"sqlite:///{state / DATABASE_FILE}")
    service = RegistryService(database)
    service.create_type(
        DeviceTypeCreate(
            name="radar-gauge",
            family="flood",
            protocol="mqtt",
            expected_interval_s=300,
            metrics=[MetricSpec(name="level_m", unit="m")],
        ),
        actor="test",
    )
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

        wait_until(api_up)
        ts = int(time.time() * 1000)
        payload = json.dumps({"ts": ts, "seq": 1, "metrics": {"level_m": -0.42}})
        mqtt_client().publish(f"kota/v1/dev/{device_id}/telemetry", payload)

        def written() -> bool:
            rows = running_stack.influx.rows(
                f"SELECT level_m, family FROM flood WHERE device_id = '{device_id}'",
                database=influx_db,
            )
            return rows == [{"time": ts, "level_m": -0.42, "family": "flood"}]

        wait_until(written)

        def online() -> bool:
            body = api.get(f"/api/v1/devices/{device_id}/status").json()
            return body.get("online") is True

        wait_until(online)  # the hub's status change reached the registry's API
    finally:
        hub.send_signal(signal.SIGTERM)
        output = hub.communicate(timeout=30)[0]
        print(output)  # shown by pytest when the test fails
    assert hub.returncode == 0, output
