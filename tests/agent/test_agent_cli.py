"""``kotahub agent`` as a process: it publishes, and its Last Will says offline when killed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from device_registry.directory import save_device_file
from hub.settings import Settings
from tests.agent.conftest import by_topic, flood_record, wait_until
from tests.conftest import MqttClientFactory, free_port
from tests.drivers.conftest import StationFactory

KOTAHUB = str(Path(sys.executable).with_name("kotahub"))


def write_config(path: Path, settings: Settings, devices_file: Path) -> None:
    mqtt = settings.mqtt
    assert mqtt.password is not None
    path.write_text(
        f'state_dir = "{settings.state_dir}"\n'
        f'[mqtt]\nhost = "{mqtt.host}"\nport = {mqtt.port}\n'
        f'password = "{mqtt.password.get_secret_value()}"\n'
        f'[agent]\ndevices_file = "{devices_file}"\n'
        # No registry-issued gateway identity on the test broker: log in as admin.
        f'mqtt_username = "{mqtt.username}"\n'
    )


async def test_agent_command_publishes_and_will_says_offline_when_killed(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
    tmp_path: Path,
) -> None:
    gw = f"gw-{unique_id}"
    station = await modbus_station()
    station.set_registers(1, 3, [1])
    station.set_int16(1, 4, -7)
    devices = tmp_path / "devices.json"
    save_device_file(devices, [flood_record(f"{unique_id}-g", gw, station.port)])
    config = tmp_path / "kotahub.toml"
    write_config(config, test_settings, devices)
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/#")
    process = subprocess.Popen(  # noqa: ASYNC220 - the agent under test is this process
        [KOTAHUB, "agent", "--gateway", gw, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_until(lambda: len(by_topic(watcher.messages, "/telemetry")) >= 3, timeout_s=20)
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 10)
        await wait_until(
            lambda: (
                [s["online"] for s in by_topic(watcher.messages, f"gw/{gw}/status")]
                == [True, False]
            )
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    telemetry = by_topic(watcher.messages, "/telemetry")
    assert telemetry[0]["metrics"] == {"level_m": -0.7}
    will = by_topic(watcher.messages, f"gw/{gw}/status")[-1]
    assert will["reason"] == "agent connection lost"


def test_agent_command_without_gateway_names_the_setting(tmp_path: Path) -> None:
    devices = tmp_path / "devices.json"
    devices.write_text(json.dumps([]))
    config = tmp_path / "kotahub.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[agent]\ndevices_file = "{devices}"\n')
    result = subprocess.run(
        [KOTAHUB, "agent", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "agent.gateway_id" in result.stdout + result.stderr


def test_run_command_refuses_a_bad_device_list(tmp_path: Path) -> None:
    devices = tmp_path / "devices.json"
    devices.write_text("[{]")
    config = tmp_path / "kotahub.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[agent]\ngateway_id = "gw1"\ndevices_file = "{devices}"\n'
        # Ports of its own: on the defaults, another test's `kotahub run` answered first.
        f"[registry]\napi_port = {free_port()}\n[ingest]\nmetrics_port = {free_port()}\n"
    )
    result = subprocess.run(
        [KOTAHUB, "run", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "devices.json" in result.stdout + result.stderr
