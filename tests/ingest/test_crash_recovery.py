"""`kotahub hub run` as a subprocess: kill -9 loses nothing, SIGTERM stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from device_registry.directory import save_device_file
from hub.settings import Settings
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.ingest.conftest import device, forget_session, level_points, payload, wait_until


def write_config(path: Path, base: Settings, *, influx_url: str, **ingest: object) -> None:
    """A kotahub.toml for the hub subprocess."""
    password = base.mqtt.password.get_secret_value() if base.mqtt.password else ""
    lines = [
        f'state_dir = "{base.state_dir}"',
        "[mqtt]",
        f'host = "{base.mqtt.host}"',
        f"port = {base.mqtt.port}",
        f'password = "{password}"',
        "[influx]",
        f'url = "{influx_url}"',
        f'database = "{base.influx.database}"',
        f'retention_policy = "{base.influx.retention_policy}"',
        "[ingest]",
    ]
    for key, value in ingest.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class HubProcess:
    """`python -m hub hub run --config FILE`, with stderr collected."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KOTAHUB_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "hub", "run", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "ingest ready" in line:
                self._ready.set()

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait for the 'ingest ready' line."""
        if not self._ready.wait(timeout_s):
            self.proc.kill()
            raise AssertionError("hub not ready:\n" + "".join(self.stderr))

    def metric(self, port: int, name: str) -> float:
        """One unlabelled-by-reason metric from /metrics."""
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        match = re.search(rf"^kotahub_ingest_{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else -1.0

    def finish(self) -> int:
        """Wait for exit and the stderr reader."""
        code = self.proc.wait(timeout=30)
        self._reader.join(5)
        return code


@pytest.fixture
def hub_config(
    test_settings: Settings, tmp_path: Path, unique_id: str, running_stack: RunningStack
) -> Iterator[tuple[Path, str, int]]:
    """Device list + config path + client id + metrics port; the session is removed after."""
    client_id = f"{unique_id}-proc"
    yield tmp_path / "kotahub.toml", client_id, free_port()
    forget_session(running_stack, client_id)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_kill_9_loses_nothing_and_sigterm_stops_cleanly(
    protocol: str,
    hub_config: tuple[Path, str, int],
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    tmp_path: Path,
) -> None:
    config, client_id, metrics_port = hub_config
    gauge = f"{unique_id}-g1"
    devices = tmp_path / "devices.json"
    save_device_file(devices, [device(gauge)])
    ingest = {
        "client_id": client_id,
        "mqtt_protocol": protocol,  # shared_group left unset: the default, one worker
        "devices_file": str(devices),
        "metrics_port": metrics_port,
        "batch_interval_s": 0.2,
    }
    # First run: InfluxDB unreachable, so every acknowledged message is only in the WAL.
    write_config(config, test_settings, influx_url=f"http://127.0.0.1:{free_port()}", **ingest)
    first = HubProcess(config)
    first.wait_ready()
    publisher = mqtt_client()
    base = time.time_ns() // 1_000_000 - 200_000
    topic = f"kota/v1/dev/{gauge}/telemetry"
    for seq in range(100):
        publisher.publish(topic, payload({"level_m": seq / 7}, ts=base + seq, seq=seq))
    wait_until(lambda: first.metric(metrics_port, "acked_total") == 100, what="100 acks")
    assert running_stack.influx.rows("SELECT * FROM flood", database=influx_db) == []
    first.proc.send_signal(signal.SIGKILL)
    first.finish()
    # While the hub is dead the broker queues for its persistent session.
    for seq in range(100, 150):
        publisher.publish(topic, payload({"level_m": seq / 7}, ts=base + seq, seq=seq))
    write_config(config, test_settings, influx_url=test_settings.influx.url, **ingest)
    second = HubProcess(config)
    second.wait_ready()

    wait_until(
        lambda: level_points(running_stack, influx_db) == 150,
        timeout_s=20,
        what="150 points after kill -9",
    )
    second.proc.send_signal(signal.SIGTERM)
    assert second.finish() == 0
    assert any("ingest stopped" in line for line in second.stderr)
    assert any("replaying" in line and "WAL record" in line for line in second.stderr)
