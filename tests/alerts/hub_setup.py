"""A `kotahub hub run` configuration with the alert engine, for tests that start the hub."""

from __future__ import annotations

from pathlib import Path

from device_registry.directory import DeviceRecord, save_device_file
from hub.settings import Settings
from tests.conftest import free_port
from tests.ingest.test_crash_recovery import write_config


def alert_hub_config(
    test_settings: Settings,
    tmp_path: Path,
    *,
    client_id: str,
    devices: list[DeviceRecord],
    rules: str,
    alerts: str = "",
    metrics_port: int = 0,
) -> Path:
    """Write devices, rules and a hub config whose ``[alerts]`` names them; its path.

    ``alerts`` holds more ``[alerts]`` keys (TOML lines).
    """
    devices_file = tmp_path / "devices.json"
    save_device_file(devices_file, devices)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules)
    config = tmp_path / "kotahub.toml"
    write_config(
        config,
        test_settings,
        influx_url=test_settings.influx.url,
        client_id=client_id,
        devices_file=str(devices_file),
        metrics_port=metrics_port or free_port(),
        batch_interval_s=0.2,
    )
    with config.open("a") as handle:
        handle.write(f'[alerts]\nrules = ["{rules_file}"]\n{alerts}')
    return config
