"""`kotahub hub run` takes its devices from the registry: PostgreSQL, or the registry API.

A real PostgreSQL (the Debian server, ``postgres_server``), a real uvicorn-served API, the
session's Mosquitto and InfluxDB; the hub is the CLI in its own process (issue 12).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.directory import DirectoryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, MetricSpec
from hub.one_machine import hub_directory
from hub.settings import load_settings
from tests.agent.registry_api_server import served_registry
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.registry.conftest import TEMPLATE_DB, PostgresServer
from tests.test_one_machine import wait_until


def seed(service: RegistryService, *device_ids: str) -> None:
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
    for device_id in device_ids:
        add(service, device_id)


def add(service: RegistryService, device_id: str) -> None:
    service.create_device(
        DeviceCreate(id=device_id, device_type="radar-gauge", state="active"), actor="test"
    )


def hub_config(
    path: Path, stack: RunningStack, influx_db: str, unique_id: str, extra: str
) -> tuple[Path, int]:
    metrics_port = free_port()
    path.write_text(
        f'state_dir = "{path.parent / "state"}"\n'
        f"[mqtt]\nport = {stack.mqtt_port}\n"
        f'password = "{stack.mqtt_password}"\n'
        f'[influx]\nurl = "{stack.settings.influx.url}"\n'
        f'database = "{influx_db}"\nretention_policy = "autogen"\n'
        f'[ingest]\nclient_id = "{unique_id}-hub"\nshared_group = ""\n'
        f"metrics_port = {metrics_port}\nbatch_interval_s = 0.2\n" + extra
    )
    return path, metrics_port


class Hub:
    """`python -m hub hub run` until stopped; its output kept for the failure message."""

    def __init__(self, config: Path, metrics_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KOTAHUB_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "hub", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.metrics_port = metrics_port

    def ready(self) -> bool:
        assert self.proc.poll() is None, "the hub exited"
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        output = self.proc.communicate(timeout=60)[0]
        print(output)
        return output


def written(stack: RunningStack, influx_db: str, device_id: str) -> bool:
    rows = stack.influx.rows(
        f"SELECT level_m FROM flood WHERE device_id = '{device_id}'", database=influx_db
    )
    return bool(rows)


def publish_until_written(
    stack: RunningStack, mqtt: MqttClientFactory, influx_db: str, device_id: str
) -> None:
    """Publish a reading every half second until the hub wrote one (it may learn late)."""
    client = mqtt()
    deadline = time.monotonic() + 30
    while not written(stack, influx_db, device_id):
        assert time.monotonic() < deadline, f"{device_id} never written"
        payload = json.dumps({"ts": int(time.time() * 1000), "metrics": {"level_m": 0.7}})
        client.publish(f"kota/v1/dev/{device_id}/telemetry", payload)
        time.sleep(0.5)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    with postgres_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield postgres_server.url(name)
    finally:
        with postgres_server.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_hub_run_reads_the_registry_in_postgresql(
    running_stack: RunningStack,
    influx_db: str,
    mqtt_client: MqttClientFactory,
    unique_id: str,
    tmp_path: Path,
    pg_url: str,
) -> None:
    database = open_database(pg_url)
    service = RegistryService(database)
    first, later = f"{unique_id}-a", f"{unique_id}-b"
    seed(service, first)
    config, port = hub_config(
        tmp_path / "kotahub.toml",
        running_stack,
        influx_db,
        unique_id,
        f'[registry]\ndatabase_url = "{pg_url}"\n',
    )
    hub = Hub(config, port)
    try:
        wait_until(hub.ready, 60)
        publish_until_written(running_stack, mqtt_client, influx_db, first)
        # Registered while the hub runs: accepted once the hub sees the change counter move.
        add(service, later)
        publish_until_written(running_stack, mqtt_client, influx_db, later)
    finally:
        output = hub.stop()
        database.close()
    assert hub.proc.returncode == 0, output
    assert "devices from the registry database postgresql+psycopg://" in output


def test_hub_run_reads_the_registry_api_and_a_gateway_token_is_refused(
    running_stack: RunningStack,
    influx_db: str,
    mqtt_client: MqttClientFactory,
    unique_id: str,
    tmp_path: Path,
) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    service = RegistryService(database)
    device = f"{unique_id}-api"
    seed(service, device)
    viewer = create_token(database, name="hub-worker", role="viewer", actor="test").token
    with served_registry(service) as registry:
        extra = f'registry_url = "{registry.url}"\nregistry_token = "{viewer}"\n'
        config, port = hub_config(
            tmp_path / "kotahub.toml", running_stack, influx_db, unique_id, extra
        )
        hub = Hub(config, port)
        try:
            wait_until(hub.ready, 60)
            publish_until_written(running_stack, mqtt_client, influx_db, device)
        finally:
            output = hub.stop()
        assert hub.proc.returncode == 0, output
        assert f"devices from the registry API at {registry.url}" in output
        cache = tmp_path / "state" / f"devices-{unique_id}-hub.json"
        assert [d["device_id"] for d in json.loads(cache.read_text())["devices"]] == [device]

        # A gateway's token reads its own gateway's list, not the whole registry.
        service.create_type(
            DeviceTypeCreate(
                name="agent",
                family="gateway",
                protocol="mqtt",
                expected_interval_s=60,
                is_gateway=True,
            ),
            actor="test",
        )
        service.create_device(DeviceCreate(id="gw-x", device_type="agent"), actor="test")
        gateway = create_token(
            database, name="gw-x", role="gateway", actor="test", gateway_id="gw-x"
        ).token
        cache.unlink()
        settings = load_settings(config)
        refused_settings = settings.model_copy(
            update={
                "ingest": settings.ingest.model_copy(update={"registry_token": SecretStr(gateway)})
            }
        )
        with pytest.raises(DirectoryError, match=r"answered 403: .*gateway") as refused:
            hub_directory(refused_settings)
    database.close()
    assert str(refused.value).startswith(f"registry {registry.url}: answered 403")
    assert gateway not in str(refused.value)
    assert not cache.exists()


def test_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, unique_id: str
) -> None:
    url = f"postgresql+psycopg://kotahub:pw-{unique_id}@127.0.0.1:{free_port()}/kotahub"
    settings = load_settings(None, state_dir=tmp_path, registry={"database_url": url})
    # What `kotahub hub run` prints after "hub failed: " (it catches DirectoryError).
    with pytest.raises(DirectoryError) as failed:
        hub_directory(settings)
    message = str(failed.value)
    assert message.startswith("registry database postgresql+psycopg://kotahub:***@127.0.0.1:")
    assert "\n" not in message
    assert f"pw-{unique_id}" not in message
