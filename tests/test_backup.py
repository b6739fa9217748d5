"""`kotahub backup` and `kotahub restore` on a real stack of the test's own (issue 13, item 8).

The round trip a city would need after losing the machine: devices registered with broker
identities, points in InfluxDB; backup; the stack stopped and its state folder deleted;
restore; and then the devices, their points and their identities work again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, MetricSpec, MqttCredentials
from hub.backup import DYNSEC_FILE, REGISTRY_FILE, TLS_DIR
from hub.local_ca import client_context
from hub.local_stack import CREDENTIALS_FILE, mqtt_connect_check
from tests.conftest import MqttTestClient, RunningStack, free_port, own_stack
from tests.test_one_machine import wait_until


def kotahub(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, to its end."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def config_for(stack: RunningStack, path: Path) -> Path:
    """A kotahub.toml for the stack's state folder and ports."""
    s = stack.settings
    path.write_text(
        f'state_dir = "{s.state_dir}"\n'
        f"[mqtt]\nport = {s.mqtt.port}\ntls_port = {s.mqtt.resolved_tls_port}\n"
        f'[influx]\nurl = "{s.influx.url}"\n'
        f"[stack]\ninflux_rpc_port = {s.stack.influx_rpc_port}\nstart_timeout_s = 60\n"
        f"[ingest]\nmetrics_port = {free_port()}\n"
        f"[registry]\napi_port = {free_port()}\n"
    )
    return path


def registry_service(stack: RunningStack) -> tuple[RegistryService, DynamicSecurityClient]:
    """The state's registry, creating identities on the stack's broker."""
    s = stack.settings
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=s.mqtt.host,
            port=s.mqtt.port,
            username=s.mqtt.username,
            password=stack.mqtt_password,
        )
    )
    database = open_database(s.registry.resolved_database_url(s.state_dir))
    return RegistryService(database, DynsecIdentities(client)), client


def device_publishes(stack: RunningStack, creds: MqttCredentials, password: str) -> bool:
    """The device connects with its secret and its telemetry reaches a subscriber."""
    s = stack.settings
    watcher = MqttTestClient(
        s.mqtt.host, s.mqtt.port, s.mqtt.username, stack.mqtt_password, f"w-{creds.client_id}"
    )
    device = MqttTestClient(s.mqtt.host, s.mqtt.port, creds.username, password, creds.client_id)
    try:
        assert watcher.connect() == "Success"
        topic = f"kota/v1/dev/{creds.username}/telemetry"
        watcher.subscribe(topic)
        if device.connect() != "Success":
            return False
        device.publish(topic, json.dumps({"metrics": {"level_m": 1.0}}))
        return any(m.topic == topic for m in watcher.wait_for(1, timeout_s=10))
    finally:
        device.close()
        watcher.close()


def points(stack: RunningStack) -> list[dict[str, object]]:
    """The flood points of the stack's database, oldest first."""
    return stack.influx.rows(
        "SELECT level_m, device_id FROM flood", database=stack.settings.influx.database
    )


def mode(path: Path) -> int:
    """Permission bits of a file."""
    return stat.S_IMODE(path.stat().st_mode)


def test_backup_wipe_restore_round_trip(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    with own_stack(tmp_path_factory, "backup") as stack:
        config = config_for(stack, tmp_path / "kotahub.toml")
        service, dynsec = registry_service(stack)
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
        secrets: dict[str, MqttCredentials] = {}
        for device_id in ("gauge-1", "gauge-2"):
            written = service.create_device(
                DeviceCreate(id=device_id, device_type="radar-gauge", state="active"),
                actor="test",
            )
            assert written.credentials is not None
            secrets[device_id] = written.credentials
        dynsec.close()
        service.database.close()
        now_ms = int(time.time() * 1000)
        response = httpx.post(
            f"{stack.settings.influx.url}/write",
            params={"db": stack.settings.influx.database, "precision": "ms"},
            content=(
                f"flood,device_id=gauge-1 level_m=1.25 {now_ms - 2000}\n"
                f"flood,device_id=gauge-2 level_m=-0.5 {now_ms - 1000}"
            ),
            timeout=10,
        )
        assert response.status_code == 204, response.text
        before = points(stack)
        assert len(before) == 2
        creds = secrets["gauge-1"]
        assert device_publishes(stack, creds, creds.password)

        # The broker's TLS folder: the local CA that field gateways trust, and the keys.
        tls = stack.settings.state_dir / "mosquitto" / "tls"
        tls_before = {p.name: (p.read_bytes(), mode(p)) for p in tls.iterdir()}
        assert {"ca.crt", "ca.key", "server.crt", "server.key"} <= set(tls_before)
        assert tls_before["ca.key"][1] == 0o600
        assert tls_before["ca.crt"][1] == 0o644
        trusted_ca = tmp_path / "gateway-trusts-ca.crt"  # as a field gateway keeps it
        trusted_ca.write_bytes(tls_before["ca.crt"][0])

        target = tmp_path / "backup"
        made = kotahub("backup", str(target), "--config", str(config))
        assert made.returncode == 0, made.stdout + made.stderr
        assert "Traceback" not in made.stderr
        for name in ("InfluxDB", "registry", "broker identities", "credentials"):
            assert name in made.stdout, made.stdout
        for name in (REGISTRY_FILE, DYNSEC_FILE, CREDENTIALS_FILE):
            assert mode(target / name) == 0o600, name
        assert mode(target) == 0o700
        assert "broker TLS" in made.stdout, made.stdout
        copied = {p.name: (p.read_bytes(), mode(p)) for p in (target / TLS_DIR).iterdir()}
        assert copied == tls_before  # same bytes, same modes (keys 0600)
        assert mode(target / TLS_DIR) == mode(tls)
        # A second backup into the same folder is refused without --force, in one line.
        again = kotahub("backup", str(target), "--config", str(config))
        assert again.returncode == 1
        assert again.stderr.strip() == (
            f"backup failed: {target} is not empty: give an empty folder, or --force"
        )

        # The machine is lost: stack down, state folder gone.
        stack.stack.down()
        shutil.rmtree(stack.settings.state_dir)

        restored = kotahub("restore", str(target), "--config", str(config))
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "Traceback" not in restored.stderr
        # It says what it started: both servers were down.
        for server in ("Mosquitto server", "InfluxDB server"):
            assert re.search(rf"{server}\s+│ started", restored.stdout), restored.stdout
        state = stack.settings.state_dir
        assert mode(state / CREDENTIALS_FILE) == 0o600
        assert mode(state / "mosquitto" / DYNSEC_FILE) == 0o600
        # The same CA and keys, with their modes: a gateway that trusts the old CA still
        # connects over TLS (no new CA was made on the empty state).
        assert {p.name: (p.read_bytes(), mode(p)) for p in tls.iterdir()} == tls_before
        ok, reason = mqtt_connect_check(
            "127.0.0.1",
            stack.settings.mqtt.resolved_tls_port,
            stack.settings.mqtt.username,
            stack.mqtt_password,
            10,
            tls=client_context(trusted_ca),
        )
        assert ok, reason

        # Devices, their points and their broker identities are back.
        service, dynsec = registry_service(stack)
        try:
            for device_id in secrets:
                assert service.get_device(device_id).state == "active"
        finally:
            dynsec.close()
            service.database.close()
        assert points(stack) == before
        for creds in secrets.values():
            assert device_publishes(stack, creds, creds.password)
        assert not device_publishes(stack, creds, "not-the-secret")

        # Restoring over data that is there now is refused without --force.
        over = kotahub("restore", str(target), "--config", str(config))
        assert over.returncode == 1
        assert over.stderr.strip().startswith("restore failed: ")
        assert "holds devices: a restore replaces them; --force to go on" in over.stderr

        # And while a hub runs on this state, even with --force: it names the hub's PID.
        hub = subprocess.Popen(
            [sys.executable, "-m", "hub", "hub", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            metrics_port = int(config.read_text().split("metrics_port = ")[1].split()[0])

            def hub_ready() -> bool:
                try:
                    url = f"http://127.0.0.1:{metrics_port}/readyz"
                    return httpx.get(url).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(hub_ready, timeout_s=90)
            busy = kotahub("restore", str(target), "--force", "--config", str(config))
            assert busy.returncode == 1
            assert busy.stderr.strip().startswith(
                f"restore failed: hub (pid {hub.pid}) running on this state: stop it first"
            ), busy.stderr
        finally:
            hub.terminate()
            hub.wait(30)
